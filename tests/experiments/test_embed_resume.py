"""The embedding recipe runs on the one training loop: a run interrupted mid-way resumes from its
checkpoint to the weights of an uninterrupted run, bit for bit, and logs each step once."""

import json

import jax
import numpy as np
import pytest

from experiments import checkpoint
from experiments.embed.config import BASES
from experiments.embed.data import prepare
from experiments.embed.init import initial_model
from experiments.embed.train import fine_tune


class Crash(RuntimeError):
    pass


def test_an_interrupted_fine_tuning_resumes_to_the_same_weights(tmp_path, monkeypatch):
    ec = BASES["quick"].replace(init="random", steps=8, ckpt_every=3, log_every=2, max_train_pairs=128,
                                eval_queries=16, eval_docs=32)
    data = prepare(ec)
    model, _ = initial_model(ec, data.tokenizer, lm_root=tmp_path / "lm", key=jax.random.key(0))
    whole = fine_tune(ec, model, data, tmp_path / "whole")

    batch = data.batch

    def crash_at_step_5(cfg, step, **kw):
        if step == 5:
            raise Crash("preempted")
        return batch(cfg, step, **kw)

    monkeypatch.setattr(data, "batch", crash_at_step_5)
    with pytest.raises(Crash):
        fine_tune(ec, model, data, tmp_path / "resumed")
    _, meta = checkpoint.read(tmp_path / "resumed" / checkpoint.CKPT_NAME)
    assert meta["step"] == 3  # the last checkpoint before the crash
    monkeypatch.setattr(data, "batch", batch)
    resumed = fine_tune(ec, model, data, tmp_path / "resumed")

    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    log = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    # every flush point (log every 2, checkpoint every 3) once: the line of step 4 before the crash is gone
    assert [r["step"] for r in log] == [2, 3, 4, 6, 8]
    whole_log = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in whole_log]
    assert {"contrastive", "grad_norm", "lr", "tokens_per_s"} <= set(log[-1])
