"""Gemma 3's attention rule with images: every (query, key) pair of a sequence with two images and text
against a brute-force statement, for causal global and local layers; and the reference attention's
dependencies, by gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemma_kernels import attention_reference, image_ids, visible

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
