"""The README's numbers come from the summaries committed beside its figures, not typed by hand."""

from pathlib import Path

import pandas as pd
import pytest

from experiments.sweeps.collect import markdown

ROOT = Path(__file__).resolve().parents[1]
SUMMARIES = sorted((ROOT / "figures").glob("*.csv"))


def test_the_main_job_has_a_summary():
    assert ROOT / "figures" / "tradeoff.csv" in SUMMARIES


@pytest.mark.parametrize("csv", SUMMARIES, ids=[p.stem for p in SUMMARIES])
def test_each_table_is_printed_from_its_summary(csv):
    """`python -m experiments.sweeps.collect figures/<sweep>.csv` prints the table the README shows;
    `--update-figures` (for the main job, `make run`) rewrites the CSV and the figures from results."""
    table = markdown(pd.read_csv(csv))
    assert table in (ROOT / "README.md").read_text()
