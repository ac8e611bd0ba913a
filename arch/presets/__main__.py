"""``python -m arch.presets``: every preset with its layer counts and parameters, checked against the
published figures."""

import sys

from arch.presets import table

sys.stdout.write(table() + "\n")
