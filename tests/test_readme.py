"""The README's numbers come from the summaries committed beside its figures, not typed by hand."""

from pathlib import Path

import pandas as pd

from experiments.sweeps.collect import markdown

ROOT = Path(__file__).resolve().parents[1]


def test_main_job_table_is_printed_from_its_summary():
    """`python -m experiments.sweeps.collect figures/tradeoff.csv` prints the table the README shows;
    `make run` rewrites the CSV (and the figures) from the main job's results."""
    table = markdown(pd.read_csv(ROOT / "figures" / "tradeoff.csv"))
    assert table in (ROOT / "README.md").read_text()
