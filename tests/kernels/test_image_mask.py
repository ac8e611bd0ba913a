"""Gemma 3's attention rule with images (section 2.1): every (query, key) pair of a sequence with two
images and text against a brute-force statement, for causal global and local layers; the reference
attention's dependencies, by gradients; and the fast paths (XLA and Pallas, forward and backward), pair
by pair and against the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gemma_kernels
from gemma_kernels import attention_reference, image_ids, visible
from gemma_kernels.attention import band
from gemma_kernels.attention.xla import dense_attention, local_attention_blocked

# text 3, <boi>, image A (5), <eoi>, text 2, <boi>, image B (4), <eoi>, text 3
LAYOUT = [0] * 4 + [1] * 5 + [0] * 4 + [1] * 4 + [0] * 4
IS_IMAGE = np.array(LAYOUT, bool)
A, B = range(4, 9), range(13, 17)


def brute(image, window):
    t = len(image)
    return np.array([[(j <= i or image[i] == image[j] >= 0) and (window is None or i - j < window)
                      for j in range(t)] for i in range(t)])


def test_image_ids_number_the_images_in_order():
    ids = np.asarray(image_ids(jnp.asarray(IS_IMAGE)))
    assert ids.tolist() == [-1] * 4 + [0] * 5 + [-1] * 4 + [1] * 4 + [-1] * 4
    batch = np.asarray(image_ids(jnp.stack([jnp.asarray(IS_IMAGE), jnp.asarray(IS_IMAGE[::-1])])))
    assert batch[0].tolist() == ids.tolist() and batch[1].max() == 1 and batch[1][0] == -1


@pytest.mark.parametrize("window", [None, 3, 8, 30])
def test_every_pair_follows_the_rule(window):
    ids = image_ids(jnp.asarray(IS_IMAGE))
    pos = jnp.arange(len(LAYOUT))
    got = np.asarray(visible(pos, pos, window=window, q_image=ids, k_image=ids))
    want = brute(np.asarray(ids), window)
    np.testing.assert_array_equal(got, want)
    # the rule's consequences, stated on their own
    assert not got[np.ix_(A, B)].any() and not got[np.ix_(range(0, 4), A)].any()  # no later image
    assert got[A[0], A[-1]] and got[B[0], B[-1]]  # an image reads itself both ways, even past a window of 3
    without = np.asarray(visible(pos, pos, window=window))
    assert (got >= without).all() and (got != without).sum() == 10 + 6  # only the images' upper triangles


def test_reference_attention_reads_its_own_image_and_never_a_later_one():
    t, rng = len(LAYOUT), np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(t, 2, 8)), jnp.float32) for _ in range(3))
    ids = image_ids(jnp.asarray(IS_IMAGE))

    def first_of_a(k, v):
        return attention_reference(q, k, v, image_ids=ids)[A[0]].sum()

    gk, gv = jax.grad(first_of_a, argnums=(0, 1))(k, v)
    reach = np.abs(np.asarray(gk)).sum(axis=(1, 2)) + np.abs(np.asarray(gv)).sum(axis=(1, 2))
    assert (reach[: A[-1] + 1] > 0).all()  # text before it and all of its image
    assert (reach[A[-1] + 1:] == 0).all()  # nothing after its image


# The fast paths, on a sequence that is not a multiple of the Pallas interpret block (32): text, image A
# across the block boundary at 32, text, image B across the one at 64, text. Windows 3 and 8 leave key
# blocks to skip; 100 is longer than the sequence.
T = 70
A_LONG, B_LONG = range(25, 37), range(60, 68)
LONG = np.zeros(T, bool)
LONG[A_LONG] = LONG[B_LONG] = True
SPAN = len(A_LONG)  # the longest image: the exact bound
# a second layout for a batch: an image from position 0 and one of 16 tokens
OTHER = np.zeros(T, bool)
OTHER[0:7] = OTHER[40:56] = True
WINDOWS = [None, 3, 8, 100]


def _impls():
    """name -> attention(q, k, v, window, ids, span): every fast path that takes image ids."""
    def public(impl):
        return lambda q, k, v, w, ids, span, **kw: gemma_kernels.attention(
            q, k, v, window=w, image_ids=ids, image_span=span, impl=impl, interpret=True, **kw)

    return {
        "xla": public("xla"),
        "xla_sliced": lambda q, k, v, w, ids, span, **kw: dense_attention(
            q, k, v, window=w, image_ids=ids, image_span=span, slices=5, **kw),  # slices of 14 rows
        "xla_blocked": lambda q, k, v, w, ids, span, **kw: local_attention_blocked(
            q, k, v, window=w or T, image_ids=ids, image_span=span, block=16, **kw),
        "pallas": public("pallas"),
    }


IMPLS = _impls()


def probed_masks(fn, window, ids, span):
    """The (query, key) pairs an implementation lets through, read off one forward and one backward pass.

    With keys and values the identity (head dim t), output row i is row i of the softmax P: non-zero
    exactly at the keys query i sees. With the identity as the output's cotangent, dv = P^T (in Pallas the
    dk/dv kernel's mask) and dq row i = scale * dS_i with dS_ij = P_ij ([i == j] - P_ii) (the dq kernel's
    mask; its diagonal vanishes in a row that sees one key only).
    """
    eye = jnp.eye(T, dtype=jnp.float32)[:, None, :]  # [t, 1 head, t]
    q = 0.5 * jax.random.normal(jax.random.key(7), (T, 1, T))

    @jax.jit
    def run(q):
        out, pull = jax.vjp(lambda q, k, v: fn(q, k, v, window, ids, span), q, eye, eye)
        return out, *pull(eye)

    out, dq, _, dv = (np.asarray(x)[:, 0, :] for x in run(q))
    return out != 0, dv.T != 0, dq != 0


@pytest.mark.parametrize("span", [SPAN, None], ids=["span_exact", "span_none"])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_fast_paths_apply_the_rule_to_every_pair(impl, window, span):
    ids = image_ids(jnp.asarray(LONG))
    want = brute(np.asarray(ids), window)
    fwd, dkv, dq = probed_masks(IMPLS[impl], window, ids, span)
    np.testing.assert_array_equal(fwd, want, err_msg="forward")
    np.testing.assert_array_equal(dkv, want, err_msg="dk/dv")
    lone = np.diag(want.sum(axis=1) == 1)  # dS_ii = P_ii (1 - P_ii) = 0 where P_ii = 1
    np.testing.assert_array_equal(dq, want & ~lone, err_msg="dq")
    assert want[A_LONG[0], A_LONG[-1]] and not want[A_LONG[-1], B_LONG[0]]  # the layout exercises the rule


def _batch(t=T, h=4, kv=2, e=8, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (2, t, h, e))
    k = jax.random.normal(ks[1], (2, t, kv, e))
    v = jax.random.normal(ks[2], (2, t, kv, e))
    return q, k, v, jax.random.normal(ks[3], (2, t, h, e))


def _assert_matches_reference(impl, window, span, segments=False):
    """Values and q/k/v gradients of ``gemma_kernels.attention`` on a batch of two image layouts (GQA 4:2,
    a soft-cap; with ``segments`` also two packed documents each) against the reference attention,
    sequence by sequence, in f32."""
    q, k, v, w = _batch()
    ids = image_ids(jnp.asarray(np.stack([LONG, OTHER])))
    seg = jnp.stack([jnp.arange(T) >= 45, jnp.arange(T) >= 20]).astype(jnp.int32) if segments else None
    opts = dict(window=window, softcap=5.0)

    def ours(q, k, v):
        return gemma_kernels.attention(q, k, v, image_ids=ids, image_span=span, segment_ids=seg, impl=impl,
                                       interpret=True, **opts)

    def ref(q, k, v):
        one = lambda q, k, v, i, s: attention_reference(q, k, v, image_ids=i, segment_ids=s, **opts)  # noqa: E731
        return jax.vmap(one, in_axes=(0, 0, 0, 0, None if seg is None else 0))(q, k, v, ids, seg)

    def value_and_grads(f):
        loss = lambda q, k, v: jnp.sum(f(q, k, v) * w)  # noqa: E731
        return f(q, k, v), *jax.grad(loss, (0, 1, 2))(q, k, v)

    got = jax.jit(lambda q, k, v: value_and_grads(ours))(q, k, v)
    for name, g, r in zip(("out", "dq", "dk", "dv"), got, value_and_grads(ref)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("span", [16, None], ids=["span_exact", "span_none"])
@pytest.mark.parametrize("window", WINDOWS)
def test_xla_values_and_gradients_match_the_reference(window, span):
    """One product for the batch (the dense path, or the blocked one for windows 3 and 8)."""
    _assert_matches_reference("xla", window, span)


@pytest.mark.parametrize("window, span", [(None, 16), (None, None), (3, None), (8, 16)])
def test_pallas_values_and_gradients_match_the_reference(window, span):
    """The kernels under vmap (one grid axis more)."""
    _assert_matches_reference("pallas", window, span)


@pytest.mark.parametrize("impl, window", [("xla", None), ("xla", 8), ("pallas", None)])
def test_images_inside_packed_documents(impl, window):
    """Segment and image ids together: both masks apply (the kernels take both id arrays, in order)."""
    _assert_matches_reference(impl, window, 16, segments=True)


@pytest.mark.parametrize("window", [None, 8])
@pytest.mark.parametrize("bq, bk", [(16, 16), (16, 32), (32, 16)])
def test_kernel_loops_cover_every_tile_an_image_reaches(window, bq, bk):
    """The Pallas loop bounds widened by ``image_span - 1`` keep every tile that holds a visible pair
    (and with ``ahead=None`` visit every tile)."""
    ids = np.asarray(image_ids(jnp.asarray(LONG)))
    tp = -(-T // max(bq, bk)) * max(bq, bk)
    vis = np.zeros((tp, tp), bool)
    vis[:T, :T] = brute(ids, window)
    for ahead in (SPAN - 1, None):
        for qb in range(tp // bq):
            lo, hi = band.key_block_range(qb * bq, bq, bk, t=T, window=window, causal=True, ahead=ahead)
            need = {j for j in range(tp // bk) if vis[qb * bq:(qb + 1) * bq, j * bk:(j + 1) * bk].any()}
            assert need <= set(range(int(lo), int(hi))), (ahead, qb, int(lo), int(hi), need)
            if ahead is None and qb * bq < T:
                assert int(hi) == -(-T // bk)
        for kb in range(tp // bk):
            lo, hi = band.query_block_range(kb * bk, bk, bq, t=T, window=window, causal=True, ahead=ahead)
            need = {i for i in range(tp // bq) if vis[i * bq:(i + 1) * bq, kb * bk:(kb + 1) * bk].any()}
            assert need <= set(range(int(lo), int(hi))), (ahead, kb, int(lo), int(hi), need)
            if ahead is None and kb * bk < T:
                assert int(lo) == 0
    # the widening matters: image A's rows 25..31 see its keys 32..36, which the unwidened range skips
    assert vis[16:32, 32:48].any() and int(band.key_block_range(16, 16, 16, t=T, window=window,
                                                                 causal=True)[1]) == 2


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_bad_image_arguments_are_refused(impl):
    q, k, v, _ = _batch(t=20, seed=1)
    ids = image_ids(jnp.asarray(np.arange(20) >= 10))
    call = lambda **kw: gemma_kernels.attention(q[0], k[0], v[0], impl=impl, interpret=True, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="image_ids apply to causal layers only.*causal=False"):
        call(image_ids=ids, causal=False)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"image_span={bad!r} must be None or a static int >= 1"):
            call(image_ids=ids, image_span=bad)
    with pytest.raises(ValueError, match="image_span=0"):
        dense_attention(q, k, v, image_ids=ids[None].repeat(2, 0), image_span=0)
