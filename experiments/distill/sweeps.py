"""Distillation sweeps (Gemma 2 section 3.2 and Table 7; Gemma 3 section 2.2 and Figure 8).

| sweep | mirrors |
|---|---|
| distill | Gemma 2 Table 7: student perplexity vs student size, next-token training vs distillation (full, |
|         | sampled-256 as in Gemma 3, top-256) from one teacher, all students on the same tokens; and the |
|         | small student's next-token vs full distillation over three training horizons |
| teacher_size | Gemma 3 Figure 8: small vs large teacher, relative perplexity vs student training tokens |

Each teacher is an ordinary Run listed before its students; a student's ``RunConfig.teacher`` is
``"@<teacher hash>"``, the sibling directory in the same sweep folder, so hashes do not depend on
``--out``. The runner executes the list in order, so the teacher is trained first, and ``--shard`` /
``--workers`` keep a student in its teacher's shard (``experiments.sweeps.runner.group_of``).

Teachers are shared baselines: with ``--seeds N`` the students are replicated (their seed moves) and
each replica distills from the same teacher, trained once.

Scales. default (2-core CPU; the default 8192-piece tokenizer): students of 4 layers x 64 and 6 layers
x 96 on 96 steps x 2,048 tokens; teacher T of 8 layers x 128 on four times the student tokens. The
horizon runs (the small student at 32 and 288 steps) are the same configs, so the same run hashes, as
teacher_size's students from T and its next-token baseline: a results folder of one serves the other.
teacher_size pits T against T_small, 2 layers x 64 on the same tokens (so that the two teachers'
perplexities differ clearly, which the question needs), at student horizons of 32, 96 and 288 steps.
quick (CI, notebooks): 1-2 layer models, a few steps, one student size and one horizon.
"""

from __future__ import annotations

from experiments.runconfig import RunConfig
from experiments.sweeps import plots
from experiments.sweeps.definitions import base, run
from experiments.sweeps.runner import Run, register

K = 256  # Gemma 3 section 2.2: 256 sampled logits per token; top-k uses the same budget

# Model shapes as overrides of the scale's base (num_layers, width, mlp_width); heads come from the base.
SHAPES = {
    "quick": {"S": (1, 32, 64), "M": (2, 32, 64), "T_small": (1, 64, 128), "T": (2, 64, 128)},
    "default": {"S": (4, 64, 256), "M": (6, 96, 384), "T_small": (2, 64, 256), "T": (8, 128, 512)},
    "device": {"S": (4, 128, 512), "M": (6, 192, 768), "T_small": (4, 256, 1024), "T": (8, 256, 1024)},
    "full": {"S": (8, 384, 1536), "M": (12, 512, 2048), "T_small": (8, 768, 3072), "T": (16, 768, 3072)},
}
# (student steps, batch, seq_len, teacher steps) per scale; the teachers see `teacher steps` batches
SCHEDULE = {
    "quick": dict(steps=4, batch=4, seq_len=64, teacher_steps=8),
    "default": dict(steps=96, batch=8, seq_len=256, teacher_steps=384),
    "device": dict(steps=400, batch=32, seq_len=512, teacher_steps=1200),
    "full": dict(steps=10_000, batch=64, seq_len=2048, teacher_steps=30_000),
}
# teacher_size horizons (student steps); the longest default one equals the distill sweep's students,
# so those runs can be copied over (same config, same hash) instead of retrained
HORIZONS = {"quick": (4,), "default": (32, 96, 288), "device": (100, 400, 1200),
            "full": (2_500, 10_000, 40_000)}


def shaped(scale: str, name: str, steps: int) -> RunConfig:
    """The scale's base with one of :data:`SHAPES`, on the distillation schedule for ``steps`` steps."""
    layers, width, mlp = SHAPES[scale][name]
    s = SCHEDULE[scale]
    b = base(scale)
    every = max(steps // 2, 1)
    return b.replace(steps=steps, batch=s["batch"], seq_len=s["seq_len"], warmup=max(steps // 10, 1),
                     eval_every=every, ckpt_every=every, log_every=max(min(10, steps // 4), 1)
                     ).with_model(num_layers=layers, width=width, mlp_width=mlp)


METHODS = {  # label -> (loss, loss_kwargs)
    "next-token": ("xent", ()),
    "full distillation": ("distill", ()),
    f"sampled-{K}": ("distill_sampled", (("k", K),)),
    f"top-{K}": ("distill_topk", (("k", K),)),
}


def student(scale: str, size: str, steps: int, method: str, teacher: RunConfig | None) -> RunConfig:
    loss, kw = METHODS[method]
    cfg = shaped(scale, size, steps)
    if loss == "xent":
        return cfg
    return cfg.replace(loss=loss, loss_kwargs=kw, teacher="@" + teacher.short_hash())


def _teacher_run(scale: str, name: str, cfg: RunConfig, **tags) -> Run:
    return run(scale, f"teacher {name}", cfg, tags=(("role", "teacher"), ("teacher", name),
                                                    *tags.items()), replicated=False)


@register("distill", "Gemma 2 Table 7 (student size x next-token vs distillation)", plot=plots.plot_distill)
def distill_sweep(scale: str) -> list[Run]:
    s = SCHEDULE[scale]
    teacher = shaped(scale, "T", s["teacher_steps"])
    runs = [_teacher_run(scale, "T", teacher, size="T", method="teacher")]  # first: trained before students
    for size in ("S", "M") if scale != "quick" else ("S",):  # quick: one size, to keep CI fast
        for method in METHODS:
            runs.append(run(scale, f"{size} {method}", student(scale, size, s["steps"], method, teacher),
                            tags=(("role", "student"), ("size", size), ("method", method),
                                  ("steps", s["steps"]))))
    # does distillation's gain hold over training time? the small student at the other horizons
    for steps in (h for h in HORIZONS[scale] if h != s["steps"]):
        for method in ("next-token", "full distillation"):
            runs.append(run(scale, f"S {method}, {steps} steps", student(scale, "S", steps, method, teacher),
                            tags=(("role", "student"), ("size", "S"), ("method", method), ("steps", steps))))
    return runs


@register("teacher_size", "Gemma 3 Fig. 8 (small vs large teacher over training tokens)",
          plot=plots.plot_teacher_size)
def teacher_size(scale: str) -> list[Run]:
    s = SCHEDULE[scale]
    tokens_per_step = s["batch"] * s["seq_len"]
    teachers = {name: shaped(scale, name, s["teacher_steps"]) for name in ("T_small", "T")}
    runs = [_teacher_run(scale, name, cfg) for name, cfg in teachers.items()]
    for steps in HORIZONS[scale]:
        tags = (("role", "student"), ("tokens", steps * tokens_per_step), ("steps", steps))
        if scale != "quick":  # the next-token baseline (quick: the two teachers only, to stay fast)
            scratch = student(scale, "S", steps, "next-token", None)
            runs.append(run(scale, f"{steps} steps next-token", scratch, tags=(*tags, ("teacher", "none"))))
        for name, cfg in teachers.items():
            runs.append(run(scale, f"{steps} steps from {name}",
                            student(scale, "S", steps, "full distillation", cfg),
                            tags=(*tags, ("teacher", name))))
    return runs
