"""``python -m experiments.sweeps NAME [--scale ...]``: :func:`experiments.sweeps.cli.main`."""

import sys

from experiments.sweeps.cli import main

sys.exit(main())
