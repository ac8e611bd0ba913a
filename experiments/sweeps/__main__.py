"""``python -m experiments.sweeps NAME [--scale ...]``: :func:`experiments.sweeps.runner.main`."""

import sys

from experiments.sweeps.runner import main

sys.exit(main())
