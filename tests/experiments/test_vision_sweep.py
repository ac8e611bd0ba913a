"""The reading recipe through the one training loop, and the ``vision`` sweep at quick scale: the loss
ignores everything but the answer, resume is exact, exact match is greedy decoding's, and the quick
sweep writes its summary table and figure."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from experiments.sweeps.runner import expand, results, run_sweep
from experiments.vision import train as tr
from experiments.vision.config import BASES
from experiments.vision.data import EOS, HELD_OUT, TRAIN, encode, example, make_batch
from experiments.vision.sweep import PanScanRun, ReadRun

RC = BASES["quick"]


def test_loss_is_cross_entropy_on_the_answer_only():
    """The loss equals the cross-entropy of the answer's tokens and eos alone, computed by hand from
    the logits: the image, the question and the padding are context, never targets."""
    model = tr.build_model(RC, jax.random.key(0))
    b = tr.train_batch(RC, 0)
    logp = np.asarray(jax.nn.log_softmax(model(b.tokens, b.images), -1))
    rows, cols = np.nonzero(b.answer_mask)
    by_hand = -logp[rows, cols, b.targets[rows, cols]].mean()
    np.testing.assert_allclose(float(tr.answer_loss(model, b.tokens, b.images, b.answer_mask)), by_hand,
                               rtol=1e-5)
    assert decode_answers(b) == [example_answer(RC, 0, j) for j in range(RC.batch)]


def decode_answers(b):
    return [[int(t) for t in tg[m > 0]] for tg, m in zip(b.targets, b.answer_mask)]


def example_answer(rc, step, j):
    ex = example(TRAIN, rc.seed, step * rc.batch + j, **rc.doc_kwargs())
    return encode(ex.answer) + [EOS]


def test_exact_match_is_greedy_decoding():
    """One teacher-forced pass says whether greedy decoding would produce the answer: checked against
    decoding token by token with full forward passes."""
    model = tr.build_model(RC, jax.random.key(1))
    exs = [example(HELD_OUT, 0, i, **RC.doc_kwargs()) for i in range(6)]
    b = make_batch(exs, RC.vision_config(), RC.max_digits)
    hits, exact = tr._correct(model, b.tokens, b.images, b.answer_mask)
    for i in range(len(exs)):
        start = int(np.argmax(b.answer_mask[i]))  # the last question token predicts the answer
        toks = b.tokens[i].copy()
        want = b.targets[i][b.answer_mask[i] > 0]
        got = []
        for k in range(len(want)):
            nxt = int(jnp.argmax(model(jnp.asarray(toks), b.images[i])[start + k]))
            got.append(nxt)
            toks[start + k + 1] = nxt
            if nxt == EOS:
                break
        assert bool(exact[i]) == (got == want.tolist())
        assert int(hits[i]) <= len(want)


def test_resume_is_exact(tmp_path):
    """A run stopped at step 3 and resumed ends with the same weights as one run straight through."""
    rc = RC.replace(steps=6, ckpt_every=3, log_every=3)
    tr.train_read(rc, tmp_path / "full", progress=False)
    assert tr.train_read(rc, tmp_path / "cut", progress=False, stop_at=3) == {"stopped_at": 3}
    assert not (tmp_path / "cut" / "summary.json").exists()
    resumed = tr.train_read(rc, tmp_path / "cut", progress=False)
    assert resumed["evals"]["docs"] == rc.eval_docs
    a, _ = tr.load_model(tmp_path / "full")
    b, _ = tr.load_model(tmp_path / "cut")
    for x, y in zip(jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array)),
                    jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))):
        np.testing.assert_array_equal(x, y)


def test_quick_sweep_writes_summary_and_figure(tmp_path):
    runs = expand("vision", "quick", 2)
    assert sum(isinstance(r, PanScanRun) for r in runs) == sum(type(r) is ReadRun for r in runs) == 8
    result = run_sweep("vision", scale="quick", out=tmp_path, progress=False, seeds=2,
                       figures=tmp_path / "figs")
    assert not result["failed"] and len(result["done"]) == 16
    df = results("vision", "quick", tmp_path, 2)
    assert (df["status"] == "done").all() and set(df["tag.pan_scan"]) == {True, False}
    table = pd.read_csv(tmp_path / "figs" / "vision.csv")
    assert len(table) == 8 and (table["n"] == 2).all()
    assert {"evals.exact_match_wide.lo", "evals.exact_match_wide.hi"} <= set(table.columns)
    assert (tmp_path / "figs" / "vision.png").stat().st_size > 0
    ps = json.loads((tmp_path / "vision" / runs[-1].key / "summary.json").read_text())
    assert ps["evals"]["pan_scan"] and ps["evals"]["mean_views_wide"] > 1
