"""What one tile of the flash attention kernels can see: loop bounds, masks and logits.

Shared by the forward kernel and both backward kernels so that the three agree exactly on the band.
The rule is :mod:`gemma_kernels.masks` (causal: ``0 <= i - j < window``; bidirectional:
``|i - j| < window``), plus: positions ``>= t`` are padding and are visible to nobody and see nothing.
With image ids (Gemma 3 section 2.1) a causal query also sees the later tokens of its own image, so
the band reaches ``ahead`` positions past the diagonal (``image_span - 1``; None: to the end).
Everything here is traced inside a Pallas kernel, so it sticks to ops the Triton lowering supports
(``lax.div`` on int32 scalars, 2-D tiles, ``jnp.where``).
"""

import jax.numpy as jnp
from jax import lax

# Finite stand-ins for -inf / +inf keep the online softmax free of ``inf - inf``.
NEG = -1e30
BIG = 1e30


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def key_block_range(q0, block_q: int, block_k: int, *, t: int, window: int | None, causal: bool,
                    ahead: int | None = 0):
    """Key blocks ``[lo, hi)`` that intersect the band of the query rows ``q0 .. q0 + block_q - 1``.

    Work per query block is then O(window + block) instead of O(t): blocks outside are skipped.
    Causal: keys up to ``ahead`` positions past the last row (images; None: every later key).
    """
    nk = _cdiv(t, block_k)  # key blocks that hold at least one real key
    q1 = q0 + block_q - 1
    lo = 0 if window is None else lax.div(jnp.maximum(q0 - (window - 1), 0), block_k)
    if causal:
        hi = nk if ahead is None else jnp.minimum(lax.div(q1 + ahead if ahead else q1, block_k) + 1, nk)
    elif window is None:
        hi = nk
    else:
        hi = jnp.minimum(lax.div(q1 + window - 1, block_k) + 1, nk)
    # A block of padding rows (t not a multiple of the largest tile) sees nothing: empty range.
    return lo, jnp.where(q0 < t, hi, lo)


def query_block_range(k0, block_k: int, block_q: int, *, t: int, window: int | None, causal: bool,
                      ahead: int | None = 0):
    """Query blocks ``[lo, hi)`` containing a row that sees one of the keys ``k0 .. k0 + block_k - 1``
    (causal: rows up to ``ahead`` positions before the first key see it too; None: every earlier row)."""
    nq = _cdiv(t, block_q)
    k1 = k0 + block_k - 1
    if causal and ahead is None:
        lo = 0
    elif causal:
        lo = lax.div(jnp.maximum(k0 - ahead, 0) if ahead else k0, block_q)
    elif window is None:
        lo = 0
    else:
        lo = lax.div(jnp.maximum(k0 - (window - 1), 0), block_q)
    hi = nq if window is None else jnp.minimum(lax.div(k1 + window - 1, block_q) + 1, nq)
    return lo, jnp.where(k0 < t, hi, lo)


def band_mask(q0, k0, block_q: int, block_k: int, *, t: int, window: int | None, causal: bool,
              q_img=None, k_img=None):
    """Boolean ``[block_q, block_k]`` tile of :func:`gemma_kernels.masks.visible` with padding removed;
    ``q_img`` ``[block_q, 1]`` and ``k_img`` ``[1, block_k]`` are the image ids of a causal layer."""
    q_pos = q0 + jnp.arange(block_q, dtype=jnp.int32)[:, None]
    k_pos = k0 + jnp.arange(block_k, dtype=jnp.int32)[None, :]
    d = q_pos - k_pos
    ok = (q_pos < t) & (k_pos < t)
    if causal:
        seen = d >= 0
        if q_img is not None:  # an image's tokens see one another both ways (Gemma 3 section 2.1)
            seen |= (q_img == k_img) & (q_img >= 0)
        ok &= seen
        if window is not None:
            ok &= d < window
    elif window is not None:
        ok &= (d < window) & (d > -window)
    return ok


def id_refs(refs, has_seg: bool, has_img: bool):
    """The kernels' optional inputs, in the order the wrappers pass them: ``(query, key)`` refs of the
    segment ids, then of the image ids; None for each that is absent."""
    refs = iter(refs)
    seg = (next(refs), next(refs)) if has_seg else None
    img = (next(refs), next(refs)) if has_img else None
    return seg, img


def segment_mask(q_seg, k_seg):
    """``[bq, 1] == [1, bk]`` as a tile: attention stays inside a packed document."""
    return q_seg == k_seg


def logits(q, k, scale: float, softcap: float | None):
    """``softcap * tanh(scale q k^T / softcap)`` in f32 (Gemma 2 section 2) and the tanh, which the
    backward pass needs for the soft-cap derivative ``1 - tanh^2``."""
    s = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * scale
    if softcap is None:
        return s, None
    th = jnp.tanh(s / softcap)
    return softcap * th, th
