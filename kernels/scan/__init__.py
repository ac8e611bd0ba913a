"""``gemma_kernels.linear_scan``: ``h_t = a_t * h_{t-1} + x_t`` with f32 state, implementation by ``impl``.

- ``"xla"``: sequential ``lax.scan`` (exact, least memory; the CPU default).
- ``"assoc"``: ``lax.associative_scan``.
- ``"pallas"``: blocked Pallas kernel (GPU/TPU; CPU in interpret mode).
"""

from jaxtyping import Array, Float

from gemma_kernels._platform import SCAN_IMPLS, resolve_impl, resolve_interpret
from gemma_kernels.scan.pallas import linear_scan_pallas
from gemma_kernels.scan.ref import linear_scan_assoc, linear_scan_reference


def linear_scan(
    a: Float[Array, "t r"],
    x: Float[Array, "t r"],
    h0: Float[Array, " r"] | None = None,
    *,
    impl: str = "auto",
    interpret: bool | None = None,
) -> tuple[Float[Array, "t r"], Float[Array, " r"]]:
    """Returns ``(y, h_last)`` with ``y[t] = h_t``; ``h0`` defaults to zeros. Batch with ``jax.vmap``."""
    if a.shape != x.shape:
        raise ValueError(f"a {a.shape} and x {x.shape} must have the same shape")
    match resolve_impl(impl, SCAN_IMPLS):
        case "xla":
            return linear_scan_reference(a, x, h0)
        case "assoc":
            return linear_scan_assoc(a, x, h0)
        case "pallas":
            return linear_scan_pallas(a, x, h0, interpret=resolve_interpret(interpret))
    raise AssertionError("unreachable")


__all__ = ["linear_scan", "linear_scan_reference", "linear_scan_assoc"]
