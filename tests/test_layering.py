"""The house's import rules, read from the source: no cycles among the repository's modules (counting
imports inside functions too), imports point down only (notebooks -> experiments -> arch ->
gemma_kernels), and arch uses only the public names of gemma_kernels."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import gemma_kernels

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"experiments": "experiments", "arch": "arch", "kernels": "gemma_kernels"}  # folder -> name
LAYER = {"experiments": 2, "arch": 1, "gemma_kernels": 0}


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [name, *path.relative_to(ROOT / folder).with_suffix("").parts]
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(source: str) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` of every absolute import in ``source``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, [a.name for a in node.names]))
    return out


def _resolve(name: str, mods) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _graph(mods) -> dict[str, set[str]]:
    graph = {}
    for mod, path in mods.items():
        edges = set()
        for module, names in _imports(path.read_text()):
            for target in [module, *(f"{module}.{n}" for n in names)]:
                if (hit := _resolve(target, mods)) and hit != mod:
                    edges.add(hit)
        graph[mod] = edges
    return graph


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                on.discard(w)
                comp.append(w)
            on.discard(v)
            if comp:
                found.append(sorted([v, *comp]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_graph(_modules())) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_down():
    mods = _modules()
    up = [(m, t) for m, edges in _graph(mods).items() for t in edges
          if LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert up == []


def test_notebooks_import_nothing_above_experiments_and_define_no_model():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        source = "\n".join("".join(c["source"]) for c in cells)
        source = "\n".join(line for line in source.splitlines() if not line.startswith("%"))
        tree = ast.parse(source)
        classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        assert classes == [], f"{nb.name} defines classes (model code belongs in arch/): {classes}"


def test_arch_uses_only_the_public_names_of_gemma_kernels():
    mods = _modules()
    private = []
    for mod, path in mods.items():
        if not mod.startswith("arch"):
            continue
        for module, names in _imports(path.read_text()):
            if module.startswith("gemma_kernels.") or (
                    module == "gemma_kernels" and not set(names) <= set(gemma_kernels.__all__)):
                private.append((mod, module, names))
    assert private == []


def _local_imports(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every import inside a function."""
    lines = source.splitlines()
    return [(n.lineno, lines[n.lineno - 1].strip()) for fn in ast.walk(ast.parse(source))
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_imports_inside_functions_are_only_optional_dependencies_and_say_so():
    """An import inside a function hides a dependency (and, between repo modules, a cycle): allowed only
    for an optional dependency, with a comment on its line saying ``optional``."""
    hidden = [(mod, line, text) for mod, path in _modules().items()
              for line, text in _local_imports(path.read_text()) if "# optional" not in text]
    assert hidden == []
    assert _local_imports("def f():\n    import numpy\n") == [(2, "import numpy")]


def test_importing_the_packages_starts_no_jax_backend():
    """A command may still choose its devices after its imports (``--data-parallel``, ``jax.distributed``):
    nothing may create an array at import time."""
    code = ("import jax._src.xla_bridge as xb, arch, gemma_kernels, experiments.train, "
            "experiments.sweeps.cli; print(sorted(xb._backends))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
