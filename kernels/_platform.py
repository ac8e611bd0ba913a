"""The one place that resolves ``impl="auto"`` and ``interpret=None`` by platform."""

import jax

ATTENTION_IMPLS = ("auto", "xla", "pallas")
SCAN_IMPLS = ("auto", "xla", "assoc", "pallas")
MATVEC_IMPLS = ("auto", "xla", "cpu")


def backend() -> str:
    return jax.default_backend()


def resolve_impl(impl: str, allowed: tuple[str, ...]) -> str:
    """``auto`` -> ``pallas`` on GPU/TPU, ``xla`` (plain JAX) on CPU. Anything else is checked."""
    if impl not in allowed:
        raise ValueError(f"impl={impl!r} is not one of {allowed}")
    if impl == "auto":
        return "pallas" if backend() in ("gpu", "tpu") else "xla"
    return impl


def resolve_interpret(interpret: bool | None) -> bool:
    """``None`` means: interpret Pallas kernels exactly when running on CPU."""
    return backend() == "cpu" if interpret is None else bool(interpret)
