"""How the hot ops run: attention and the linear recurrence, each with a plain-JAX reference.

Imports nothing from the rest of the repository.

The import name is ``gemma_kernels``, not the folder's name. The name ``kernels`` belongs to the Hugging
Face ``kernels`` distribution, which transformers 5.25+ imports (``from kernels import Mode, ...``), and
one process can bind a name to one module only. So:

- ``pyproject.toml`` installs this folder as ``gemma_kernels`` (``package-dir``), and the repository
  imports it only by that name: from any working directory, ``import arch`` never depends on which
  ``kernels`` comes first on ``sys.path``;
- where the project root itself is on ``sys.path`` (``python -m ...`` from the root puts it first),
  Python finds this folder when anything asks for ``kernels``. This file then hands that name to the
  installed distribution (transformers and sentence-transformers import as they would anywhere else),
  or, with no distribution installed, to an empty placeholder: no ``__file__`` or ``__version__``, so
  transformers' availability check (which imports the name) reads "not installed", and any other
  attribute raises an AttributeError that names ``gemma_kernels``.

``tests/test_import_names.py`` checks both directions in fresh processes.
"""

if __name__ != "gemma_kernels":
    # Found by the name `kernels` (or another alias of this folder): stand aside.
    import importlib.machinery
    import importlib.util
    import os
    import sys
    import types

    _root = os.path.realpath(os.path.join(os.path.dirname(__file__), os.pardir))
    _path = [p for p in sys.path if os.path.realpath(p or os.curdir) != _root]
    _spec = importlib.machinery.PathFinder.find_spec(__name__, _path)
    if _spec is None:
        _module = types.ModuleType(__name__, "Placeholder: the Hugging Face `kernels` is not installed.")
        _hint = (f"{__name__!r} is the Hugging Face distribution's name, and it is not installed; the "
                 f"folder {os.path.dirname(__file__)} is the package 'gemma_kernels': import that instead "
                 f"(after `pip install -e .` or `make`)")

        def _missing(name: str, hint: str = _hint):
            raise AttributeError(f"{name!r}: {hint}")

        _module.__getattr__ = _missing
        sys.modules[__name__] = _module  # the import statement returns what sys.modules holds after this
    else:
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[__name__] = _module
        _spec.loader.exec_module(_module)
else:
    from gemma_kernels._platform import ATTENTION_IMPLS, MATVEC_IMPLS, SCAN_IMPLS
    from gemma_kernels.attention import attention, attention_reference
    from gemma_kernels.attention.ref import grouped_attention
    from gemma_kernels.layout import dot, dot_tn, materialize, physical_swap, set_rows
    from gemma_kernels.masks import bidirectional_radius, image_ids, visible
    from gemma_kernels.matvec import dequantize, matvec, matvec_reference, signed_codes
    from gemma_kernels.scan import linear_scan, linear_scan_assoc, linear_scan_reference

    __all__ = [
        "ATTENTION_IMPLS",
        "MATVEC_IMPLS",
        "SCAN_IMPLS",
        "attention",
        "attention_reference",
        "bidirectional_radius",
        "dot",
        "dot_tn",
        "grouped_attention",
        "image_ids",
        "linear_scan",
        "linear_scan_assoc",
        "linear_scan_reference",
        "materialize",
        "matvec",
        "matvec_reference",
        "dequantize",
        "signed_codes",
        "physical_swap",
        "set_rows",
        "visible",
    ]
