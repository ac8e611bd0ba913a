"""How models are trained, evaluated and swept; the README's layout section maps the subpackages."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout: README, figures/, results/
