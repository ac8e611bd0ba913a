"""The kernels lower through Pallas' Triton (GPU) and Mosaic (TPU) backends without the device.

Cross-platform lowering catches what interpret mode cannot: Triton's power-of-two tile rule,
primitives a backend cannot lower, more than 3 grid axes. Compiling the lowered kernels (Triton IR
to PTX, Mosaic to TPU code, with its VMEM limits) needs the device and is left to kernels/bench.py.
"""

import importlib

import jax
import jax.numpy as jnp
import pytest

import gemma_kernels.blocks

attn = importlib.import_module("gemma_kernels.attention.pallas")  # gemma_kernels.attention is also a function
scan = importlib.import_module("gemma_kernels.scan.pallas")


PLATFORMS = {"cuda": ("gpu", "__gpu$xla.gpu.triton"), "tpu": ("tpu", "tpu_custom_call")}


@pytest.fixture(params=list(PLATFORMS))
def platform(request, monkeypatch):
    """Pretend the backend is a GPU / TPU, so block sizes and compiler parameters are its own."""
    monkeypatch.setattr(gemma_kernels.blocks, "backend", lambda: PLATFORMS[request.param][0])
    return request.param


def lower(platform, fn, *args) -> str:
    return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("window, causal, segments, images", [
    (100, True, True, False), (None, False, False, False), (None, True, True, True),
])
def test_attention_fwd_and_bwd_lower(platform, window, causal, segments, images):
    b, t, h, kv, e = 2, 1000, 8, 1, 128  # t not a block multiple; vmap adds the third grid axis
    q = jax.ShapeDtypeStruct((b, t, h, e), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((b, t, kv, e), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((b, t), jnp.int32)

    def f(q, k, v, seg):
        def one(q, k, v, s):  # the segment ids double as image ids: only the types matter here
            return attn.attention_pallas(q, k, v, window=window, causal=causal, softcap=50.0,
                                         segment_ids=s if segments else None,
                                         image_ids=s if images else None, image_span=256)

        out, pullback = jax.vjp(lambda q, k, v: jax.vmap(one)(q, k, v, seg), q, k, v)
        return pullback(out)

    text = lower(platform, f, q, k, k, seg)
    for name in ("flash_attention_fwd", "flash_attention_dq", "flash_attention_dkv"):
        assert name in text
    assert text.count(PLATFORMS[platform][1]) == 3


def test_scan_fwd_and_bwd_lower(platform):
    a = jax.ShapeDtypeStruct((8, 1000, 2560), jnp.bfloat16)

    def f(a, x):
        (y, h), pullback = jax.vjp(jax.vmap(scan.linear_scan_pallas), a, x)
        return pullback((y, h))

    text = lower(platform, f, a, a)
    assert "linear_scan_rev" in text
    assert text.count(PLATFORMS[platform][1]) == 2
