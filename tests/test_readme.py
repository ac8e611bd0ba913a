"""The README's numbers come from the summaries committed beside its figures, not typed by hand."""

import contextlib
import io
import shlex
from pathlib import Path

import pandas as pd
import pytest

from experiments.sweeps import collect
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


COMPARE = "python -m experiments.sweeps.collect "
COMMANDS = [line.strip().removeprefix("$ ") for line in (ROOT / "README.md").read_text().splitlines()
            if line.strip().removeprefix("$ ").startswith(COMPARE) and "--compare" in line]


def test_the_readme_compares_points_with_intervals():
    assert COMMANDS, "the README states no comparison printed by collect --compare"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_comparison_is_printed_from_its_summary(command):
    """Every sentence comparing two points comes from `collect --compare` on a committed summary, which
    says whether the two 95% intervals overlap."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        collect.main([str(ROOT / a) if a.endswith(".csv") else a
                      for a in shlex.split(command.removeprefix(COMPARE))])
    assert out.getvalue().strip() in (ROOT / "README.md").read_text()


def test_preset_rows_are_printed_by_the_presets_command():
    """Each preset row the README shows is a row of `python -m arch.presets`, as printed."""
    from arch.presets import PRESETS, VISION_PRESETS, table

    printed = {row.rstrip() for row in table().splitlines()}
    names = set(PRESETS) | set(VISION_PRESETS)
    shown = [line.rstrip() for line in (ROOT / "README.md").read_text().splitlines()
             if line.split(" ", 1)[0] in names and "  " in line]
    assert len(shown) >= 13
    assert [row for row in shown if row not in printed] == []
