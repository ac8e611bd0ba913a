"""Our kernels and the Hugging Face ``kernels`` distribution, both ways, in fresh processes.

The folder ``kernels/`` is the package ``gemma_kernels`` (see its ``__init__``): the repository runs
from any working directory whichever ``kernels`` Python finds, and transformers, which imports the
distribution by the name ``kernels``, works in a process where our packages are importable."""

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c code`` in ``cwd``; like ``python -m``, it puts ``cwd`` first on ``sys.path``."""
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


FORWARD = """
import sys
import jax, jax.numpy as jnp
import arch
model = arch.LM(arch.preset("tiny_gemma3"), key=jax.random.key(0))
assert model(jnp.arange(12)).shape == (12, 256)
print(sys.modules["gemma_kernels"].__file__)
print("kernels" in sys.modules)
"""


def test_model_runs_from_another_folder(tmp_path):
    """From elsewhere the distribution (where installed) is the first ``kernels`` on the path."""
    out = _ok(_python(FORWARD, tmp_path)).split()
    assert Path(out[0]) == ROOT / "kernels" / "__init__.py"
    assert out[1] == "False"  # the repository never asks for the name `kernels`


HF = """
import sys
import arch, experiments.embed.teacher
import transformers, sentence_transformers
from transformers import Gemma3TextConfig
import kernels
print(kernels.__file__)
print(sys.modules["gemma_kernels"].__file__)
"""


@pytest.mark.hf
@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_transformers_imports_beside_our_packages(where, tmp_path):
    pytest.importorskip("transformers")
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the Hugging Face `kernels` distribution is not installed (transformers < 5.25)")
    out = _ok(_python(HF, ROOT if where == "root" else tmp_path)).split()
    assert "site-packages" in out[0]  # the distribution, not our folder
    assert Path(out[1]) == ROOT / "kernels" / "__init__.py"


def test_without_the_distribution_the_name_is_an_empty_placeholder():
    """From the root, with no distribution to hand the name to, ``kernels`` is a placeholder that
    transformers' availability check (import, then look for ``__version__`` and ``__file__``) reads
    as absent, and whose other attributes say to import gemma_kernels."""
    code = ("import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
            "import kernels\n"
            "assert getattr(kernels, '__version__', 'N/A') == 'N/A'\n"
            "assert getattr(kernels, '__file__', None) is None\n"
            "kernels.attention")
    done = _python(code, ROOT)
    assert done.returncode != 0
    assert "AttributeError" in done.stderr and "gemma_kernels" in done.stderr


def test_every_package_folder_is_installed():
    """pyproject lists packages by hand (for the kernels/ -> gemma_kernels mapping): a new subpackage
    must be listed there, or a wheel install would lack it."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = set()
    for top in ("arch", "experiments", "kernels"):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            folders.add(".".join(("gemma_kernels",) + parts[1:] if parts[0] == "kernels" else parts))
    assert set(setup["packages"]) == folders
    assert setup["package-dir"] == {"gemma_kernels": "kernels"}
