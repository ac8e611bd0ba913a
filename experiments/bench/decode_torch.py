"""transformers' per-token decode time on the shapes ``experiments.bench.decode`` times: the peer row.

Run by ``experiments.bench.decode --peer`` as a script in its own process, with the working directory
outside the repository: transformers imports a distribution named ``kernels``, which the repository's
top-level ``kernels/`` folder would shadow. Reads one JSON request on stdin, ``{"models": [{"label",
"hf_config", "dtype"}], "contexts", "rounds", "impls"}``; writes the fastest step per model, attention
implementation and context as JSON on stdout.

Method, as ours: random weights in the model's dtype, the cache filled directly (a ``DynamicCache``
given each attention layer's K/V for ``ctx`` positions, random values; the recurrent layers' state
set up by the model) rather than by an O(ctx^2) prefill, then single-token forward passes at position
``ctx`` onwards (the argmax of the logits feeding the next), the fastest of ``rounds`` after two
warm-up steps, wall-clock and process CPU time.
"""

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # no sibling shadows a module

import torch  # noqa: E402
import transformers  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def build(hf_config: dict, dtype: torch.dtype, impl: str):
    cfg = transformers.AutoConfig.for_model(**hf_config)
    cfg._attn_implementation = impl
    cls = getattr(transformers, hf_config["architectures"][0])
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cpu"):
            model = cls(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    return model.eval(), cfg


def filled_cache(model, cfg, ctx: int, dtype: torch.dtype):
    """K/V of ``ctx`` positions in every attention layer (sliding layers keep their window)."""
    cache = transformers.DynamicCache(config=cfg)
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
    kv, e = cfg.num_key_value_heads, getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    if hasattr(model, "_setup_cache"):  # RecurrentGemma: Conv1D and RG-LRU state buffers
        model._setup_cache(cfg, 1, "cpu", dtype)
    g = torch.Generator().manual_seed(0)
    for idx, kind in enumerate(types):
        if kind in ("full_attention", "sliding_attention"):
            n = ctx if kind == "full_attention" else min(ctx, cfg.sliding_window or ctx)
            k = torch.randn(1, kv, n, e, generator=g, dtype=torch.float32).to(dtype)
            cache.update(k, torch.randn_like(k), idx)
    return cache


def time_model(hf_config: dict, dtype: str, impl: str, contexts: list[int], rounds: int) -> dict:
    dt = DTYPES[dtype]
    model, cfg = build(hf_config, dt, impl)
    wall, cpu = [], []
    for ctx in contexts:
        cache = filled_cache(model, cfg, ctx, dt)
        token, best_wall, best_cpu = torch.zeros((1, 1), dtype=torch.long), float("inf"), float("inf")
        with torch.inference_mode():
            for step in range(2 + rounds):
                t0, c0 = time.perf_counter(), time.process_time()
                out = model(input_ids=token, position_ids=torch.tensor([[ctx + step]]),
                            past_key_values=cache, use_cache=True)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                if step >= 2:
                    best_wall = min(best_wall, time.perf_counter() - t0)
                    best_cpu = min(best_cpu, time.process_time() - c0)
        wall.append(best_wall)
        cpu.append(best_cpu)
        del cache
    return dict(wall_s=wall, cpu_s=cpu)


def main() -> None:
    req = json.loads(sys.stdin.read())
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    out = dict(torch=torch.__version__, transformers=transformers.__version__,
               threads=torch.get_num_threads(), models={})
    for m in req["models"]:
        out["models"][m["label"]] = {
            impl: time_model(m["hf_config"], m["dtype"], impl, req["contexts"], req["rounds"])
            for impl in req["impls"]}
        print(f"  transformers {m['label']}: done", file=sys.stderr, flush=True)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
