"""Every notebook executes top to bottom at quick scale (running the quick sweeps it needs)."""

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """One results folder for all notebooks, so a sweep two notebooks share runs once."""
    return tmp_path_factory.mktemp("results")


def test_there_are_notebooks_for_every_report():
    names = {p.stem for p in NOTEBOOKS}
    assert {"gemma2", "gemma3", "recurrentgemma", "tradeoffs"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, results, monkeypatch):
    monkeypatch.setenv("GEMMA_LAB_SCALE", "quick")
    monkeypatch.setenv("GEMMA_LAB_RESULTS", str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel spec launches `python`: make it this interpreter (the project's venv), not the PATH's
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert os.environ["GEMMA_LAB_SCALE"] == "quick"
    # every run of every sweep finished: a failed run leaves error.json behind
    failed = sorted(str(p.relative_to(results)) for p in results.rglob("error.json"))
    assert not failed, f"runs failed: {failed}"
    # every cell that draws shows at least one figure
    for cell in code:
        if re.search(r"^show\(", cell.source, re.M) or "plot_all(df" in cell.source:
            images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
            assert images, f"no figure shown by the cell:\n{cell.source}"
