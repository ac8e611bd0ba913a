"""Synthetic recall tasks: every answer is recoverable from its row at the distance recorded, distances
are what was asked, keys are not reused, rows are pure functions of (seed, index), and the scoring
gives a copier 1.0 and a uniform model chance, bucket by bucket."""

import jax.numpy as jnp
import numpy as np
import pytest

import arch
from experiments.data.batches import Batch
from experiments.data.tasks import TASKS, MixedSequences, Task, TaskSequences, parse_task
from experiments.eval.probes import distance_edges, task_accuracy
from experiments.eval.run import evaluate_run
from experiments.step import batch_arrays, batch_loss, init_params
from experiments.train import parse_args, train

SIZES = {"mqar": dict(pairs=6), "passkey": dict(key_len=3), "copy": dict(pairs=5), "induction": {}}


def rows(name, n=40, **kw):
    task = Task(name=name, seq_len=96, vocab_size=200, **{**SIZES[name], **kw})
    return task, task.rows(3, range(n))


@pytest.mark.parametrize("name", TASKS)
def test_every_answer_is_the_token_at_its_recorded_distance(name):
    task, r = rows(name)
    for tokens, answer, distance in zip(*r):
        pos = np.flatnonzero(answer)
        assert len(pos) == {"mqar": 6, "passkey": 3, "copy": 5, "induction": 1}[name]
        assert np.all(distance[pos] > 0) and np.all(distance[~answer] == -1)
        np.testing.assert_array_equal(tokens[pos + 1], tokens[pos - distance[pos]])  # the source holds it
        lo, hi = task.ranges()["values"]
        assert np.all((tokens[pos + 1] >= lo) & (tokens[pos + 1] < hi))  # answers are answer ids


def test_mqar_keys_are_distinct_queries_follow_their_pairs_and_gaps_hold():
    task, r = rows("mqar", gap=30)
    for tokens, answer, distance in zip(*r):
        keys = tokens[0:12:2]
        assert len(set(keys.tolist())) == 6  # no key reused across pairs
        pos = np.flatnonzero(answer)
        assert set(tokens[pos].tolist()) <= set(keys.tolist())
        assert np.all(pos >= 12 + 30)
        for q in pos:  # the source is the key's latest earlier value: no occurrence of it in between
            src = q - distance[q]
            assert tokens[src - 1] == tokens[q] and tokens[q] not in tokens[src : q].tolist()
            assert distance[q] > 30 or tokens[q] in tokens[12:q].tolist()  # only a repeat is nearer
        # a query's answer is the value bound to its key
        bound = dict(zip(keys.tolist(), tokens[1:12:2].tolist()))
        assert [bound[int(k)] for k in tokens[pos]] == tokens[pos + 1].tolist()
        # keys occur nowhere else: the filler never plants a false cue
        k_lo, k_hi = task.ranges()["keys"]
        elsewhere = np.ones(len(tokens), bool)
        elsewhere[0:12:2] = elsewhere[pos] = False
        assert not np.any((tokens[elsewhere] >= k_lo) & (tokens[elsewhere] < k_hi))
    # queries are drawn with replacement: no row lets the last answers follow by elimination
    asked = [len(set(t[np.flatnonzero(a)].tolist())) for t, a, _ in zip(*r)]
    assert min(asked) < 6 and max(asked) > 1


@pytest.mark.parametrize("name", ("passkey", "induction"))
def test_key_recall_distance_is_bounded_as_asked_and_the_cue_is_unique(name):
    _, r = rows(name, gap=20, max_gap=40)
    for tokens, answer, distance in zip(*r):
        pos = np.flatnonzero(answer)
        cue = tokens[pos[0]]  # the second cue's last token predicts the first answer
        assert np.sum(tokens[: pos[0]] == cue) == 1  # planted once before: one right answer
        assert np.all((distance[pos] >= 20) & (distance[pos] <= 40 + 2 * len(pos) + 2))


def test_rows_are_pure_functions_of_seed_and_index_and_seeds_differ():
    task = Task(name="mqar", seq_len=64, vocab_size=200, pairs=4)
    a, b = task.rows(0, [5, 9]), task.rows(0, [9, 5])
    np.testing.assert_array_equal(a.tokens[0], b.tokens[1])
    assert not np.array_equal(task.rows(0, [5]).tokens, task.rows(1, [5]).tokens)


def test_bad_sizes_name_the_field_and_what_is_allowed():
    with pytest.raises(ValueError, match="task='recall'"):
        Task(name="recall", seq_len=64, vocab_size=200)
    with pytest.raises(ValueError, match="seq_len=20 < 24"):
        Task(name="mqar", seq_len=20, vocab_size=200, pairs=6)
    with pytest.raises(ValueError, match="keys=4 < pairs=6"):
        Task(name="mqar", seq_len=64, vocab_size=200, pairs=6, keys=4)
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        Task(name="mqar", seq_len=64, vocab_size=100)
    with pytest.raises(ValueError, match=r"task_kwargs \['pair'\]: unknown"):
        parse_task("mqar", 64, 200, (("pair", 3),))
    with pytest.raises(ValueError, match="queries=0 must be a positive int"):
        Task(name="mqar", seq_len=64, vocab_size=200, queries=0)
    with pytest.raises(ValueError, match="seq_len=30 < 32"):
        Task(name="mqar", seq_len=30, vocab_size=200, pairs=4, queries=12)


def test_mqar_queries_outnumber_pairs_when_asked_and_repeats_read_the_nearest_source():
    task = Task(name="mqar", seq_len=96, vocab_size=200, pairs=4, queries=20)
    r = task.rows(0, range(20))
    for tokens, answer, distance in zip(*r):
        pos = np.flatnonzero(answer)
        assert len(pos) == 20 and set(tokens[pos].tolist()) <= set(tokens[0:8:2].tolist())
        np.testing.assert_array_equal(tokens[pos + 1], tokens[pos - distance[pos]])
        repeats = [q for q in pos if tokens[q] in tokens[8:q].tolist()]
        assert repeats and all(tokens[q - distance[q] - 1] == tokens[q] and q - distance[q] > 8
                               for q in repeats)


def test_mqar_repeat_asks_the_previous_key_again_and_brings_answers_near():
    def near(repeat):
        task = Task(name="mqar", seq_len=64, vocab_size=64, pairs=8, queries=16, keys=16, values=16,
                    repeat=repeat)
        r = task.rows(0, range(64))
        asked = [tokens[np.flatnonzero(answer)] for tokens, answer, _ in zip(*r)]
        again = np.mean([np.mean(a[1:] == a[:-1]) for a in asked])
        return again, np.mean(r.distance[r.answer] < 4)

    (again0, near0), (again9, near9) = near(0.0), near(0.9)
    assert again0 < 0.25 and again9 > 0.85  # 1/8 by chance; 0.9 + 0.1/8 when asked
    assert near9 > 2 * near0
    with pytest.raises(ValueError, match="repeat=1.0"):
        Task(name="mqar", seq_len=64, vocab_size=64, repeat=1.0)


def _copier(rows_by_input):
    """Logits that put all mass on the true next token: a model that has solved the task."""
    def fn(inputs):
        nxt = np.stack([rows_by_input[r.tobytes()] for r in np.asarray(inputs)])
        return jnp.asarray(np.eye(200, dtype=np.float32)[nxt] * 10)
    return fn


@pytest.mark.parametrize("name", TASKS)
def test_a_copier_scores_one_and_a_uniform_model_scores_chance_in_every_bucket(name):
    task, r = rows(name, n=24)
    inputs, targets = r.tokens[:, :-1], r.tokens[:, 1:]
    edges = distance_edges(16, 2)
    perfect = task_accuracy(_copier({i.tobytes(): t for i, t in zip(inputs, targets)}), inputs, targets,
                            r.answer, r.distance, task.answer_ids(), edges=edges, batch_size=8)
    assert all(a == 1.0 for a, n in zip(perfect.accuracy.values(), perfect.answers.values()) if n)
    assert sum(perfect.answers.values()) == int(r.answer.sum())
    uniform = task_accuracy(lambda x: jnp.zeros((*x.shape, 200)), inputs, targets, r.answer, r.distance,
                            task.answer_ids(), edges=edges, batch_size=8)
    for acc, n in zip(uniform.accuracy.values(), uniform.answers.values()):
        assert (n == 0 and np.isnan(acc)) or acc == pytest.approx(uniform.chance)


def test_mixture_replaces_a_fixed_fraction_of_rows_with_task_rows():
    class Corpus:
        seq_len, stream, num_tokens = 64, np.arange(10), 10

        def __len__(self):
            return 1000

        def get(self, idx):
            n = len(idx)
            z = np.zeros((n, 64), np.int32)
            return Batch(z + 3, z + 3, z, np.zeros((n, 64), bool))

    task = Task(name="mqar", seq_len=64, vocab_size=200, pairs=4)
    mix = MixedSequences(Corpus(), TaskSequences(task, 0), 0.25)
    b = mix.get(np.arange(400))
    is_task = b.inputs[:, 0] != 3
    assert 0.18 < is_task.mean() < 0.32
    np.testing.assert_array_equal(mix.get(np.arange(400)).inputs, b.inputs)  # fixed per row
    assert np.all(b.loss_mask[~is_task]) and np.all(b.loss_mask[is_task].sum(1) == 4)


def test_a_run_trains_on_a_task_alone_and_is_scored_by_distance(tmp_path):
    """Pure task: the loss counts the answers only, the summary names the task, and the evaluation
    scores held-out rows by distance bucket (no corpus, no tokenizer)."""
    run, out, *_ = parse_args([
        "--preset", "tiny_gemma3", "--task", "mqar", "--task-kwarg", "pairs=4", "--task-kwarg", "keys=16",
        "--task-kwarg", "values=16", "--vocab-size", "64", "--seq", "48", "--steps", "4", "--batch", "4",
        "--matmul-dtype", "float32", "--out", str(tmp_path / "run"),
        "--override", "num_layers=2", "--override", "width=32", "--override", "num_heads=2",
        "--override", "num_kv_heads=1", "--override", "head_dim=16", "--override", "mlp_width=64",
        "--override", "window=8", "--override", "pattern='LG'"])
    assert run.pure_task and run.task_spec().pairs == 4
    assert "task" in run.to_dict() and "task" not in run.replace(task=None, task_kwargs=()).to_dict()
    summary = train(run.replace(log_every=2, eval_every=4, ckpt_every=4), out, progress=False)
    assert summary["corpus"] == "task:mqar" and summary["final_val_loss"] > 0
    ev = evaluate_run(out, quick=True)
    assert ev["task_edges"] == [8, 15] and ev["task_chance"] == pytest.approx(1 / 16)
    assert sum(ev[f"task_answers_{b}"] for b in ("window", "field", "beyond")) == 64 * 4
    assert 0 <= ev["task_acc"] <= 1 and "val_ppl" not in ev and ev["cache_bytes_32k"] > 0


def test_answer_only_loss_ignores_every_other_target():
    """The step's loss over a task batch is the mean over answer positions: changing a non-answer
    target leaves it unchanged, changing an answer's moves it."""
    task = Task(name="mqar", seq_len=32, vocab_size=64, pairs=2, keys=8, values=8)
    batch = TaskSequences(task, 0).get([0, 1])
    cfg = arch.preset("tiny_gemma3", num_layers=1, width=32, num_heads=2, num_kv_heads=1, head_dim=16,
                      mlp_width=64, vocab_size=64, matmul_dtype="float32")
    params, static = init_params(cfg, 0)
    arrays = batch_arrays(batch)
    base, count = batch_loss(params, static, arrays)
    assert int(count) == 4
    other = np.flatnonzero(~batch.loss_mask[0])[3]
    moved = dict(arrays, targets=arrays["targets"].copy())
    moved["targets"][0, other] = (moved["targets"][0, other] + 1) % 64
    assert float(batch_loss(params, static, moved)[0]) == pytest.approx(float(base))
    ans = np.flatnonzero(batch.loss_mask[0])[0]
    moved["targets"][0, ans] = (moved["targets"][0, ans] + 1) % 64
    assert float(batch_loss(params, static, moved)[0]) != pytest.approx(float(base))
