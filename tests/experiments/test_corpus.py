"""Corpus loading, validation of user data, fingerprints, the train/validation split, entropy."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from experiments.data.corpus import Corpus, Document, cache_root, load_corpus, unigram_entropy


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def _corpus(n: int) -> Corpus:
    return Corpus(tuple(Document(f"doc{i:04d}.txt", f"text {i}") for i in range(n)), "synthetic")


def test_folder_is_recursive_sorted_and_named_relative(tmp_path):
    _write(tmp_path, {"b.txt": "bee", "a/c.md": "# sea", "d.py": "x = 1\n", "notes.csv": "1,2",
                      ".hidden.txt": "no", "e.txt": "   \n"})
    c = load_corpus(str(tmp_path))
    # Unknown extensions, hidden files and blank documents inside a folder are skipped.
    assert [d.name for d in c] == ["a/c.md", "b.txt", "d.py"]
    assert [d.text for d in c] == ["# sea", "bee", "x = 1\n"]
    assert c.num_chars == len("# sea") + len("bee") + len("x = 1\n")


def test_jsonl_parquet_and_file_lists(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "one", "id": 1}) + "\n\n"
                                      + json.dumps({"text": "two"}) + "\n")
    pq.write_table(pa.table({"text": ["p0", None, "p2"], "n": [0, 1, 2]}), tmp_path / "t.parquet")
    c = load_corpus(str(tmp_path / "d.jsonl"))
    assert [(d.name, d.text) for d in c] == [("d.jsonl:000000001", "one"), ("d.jsonl:000000003", "two")]
    c = load_corpus(str(tmp_path / "t.parquet"))
    assert [(d.name, d.text) for d in c] == [("t.parquet:000000000", "p0"), ("t.parquet:000000002", "p2")]
    both = load_corpus([tmp_path / "t.parquet", tmp_path / "d.jsonl"])
    assert [d.text for d in both] == ["one", "two", "p0", "p2"]  # sorted by name, not argument order


def _bad_inputs(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "only_csv").mkdir()
    (tmp_path / "only_csv" / "x.csv").write_text("a,b")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.md").write_text("  \n\n")
    (tmp_path / "data.csv").write_text("a,b")
    (tmp_path / "notext.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    (tmp_path / "badjson.jsonl").write_text('{"text": "ok"}\nnot json\n')
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "notext.parquet")
    (tmp_path / "corrupt.parquet").write_bytes(b"not parquet at all")
    return {
        "missing": (tmp_path / "missing", "no such file"),
        "empty_dir": (tmp_path / "empty_dir", "none ending in"),
        "only_csv": (tmp_path / "only_csv", "none ending in"),
        "empty.txt": (tmp_path / "empty.txt", "no text"),
        "blank.md": (tmp_path / "blank.md", "no text"),
        "data.csv": (tmp_path / "data.csv", "unknown extension"),
        "notext.jsonl": (tmp_path / "notext.jsonl", "no string field 'text'"),
        "badjson.jsonl": (tmp_path / "badjson.jsonl", "invalid JSON"),
        "latin1.txt": (tmp_path / "latin1.txt", "not UTF-8"),
        "notext.parquet": (tmp_path / "notext.parquet", "no 'text' column"),
        "corrupt.parquet": (tmp_path / "corrupt.parquet", "cannot read as parquet"),
    }


@pytest.mark.parametrize("case", ["missing", "empty_dir", "only_csv", "empty.txt", "blank.md", "data.csv",
                                  "notext.jsonl", "badjson.jsonl", "latin1.txt", "notext.parquet",
                                  "corrupt.parquet"])
def test_bad_data_raises_value_error_naming_path(tmp_path, case):
    pytest.importorskip("pyarrow")
    path, problem = _bad_inputs(tmp_path)[case]
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        load_corpus(str(path))
    assert problem in str(info.value)
    if case == "notext.jsonl":
        assert f"{path}:2" in str(info.value)  # the offending line


def test_fingerprint_is_stable_and_tracks_content(tmp_path):
    _write(tmp_path, {"a.txt": "alpha", "b.txt": "beta"})
    fp = load_corpus(str(tmp_path)).fingerprint
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert load_corpus(str(tmp_path)).fingerprint == fp
    (tmp_path / "b.txt").write_text("betA")
    assert load_corpus(str(tmp_path)).fingerprint != fp
    (tmp_path / "b.txt").write_text("beta")
    assert load_corpus(str(tmp_path)).fingerprint == fp
    (tmp_path / "b.txt").rename(tmp_path / "c.txt")  # same texts, different names
    assert load_corpus(str(tmp_path)).fingerprint != fp
    # Concatenation boundaries matter: ("ab", "c") is not ("a", "bc").
    assert (Corpus((Document("x", "ab"), Document("y", "c")), "").fingerprint
            != Corpus((Document("x", "a"), Document("y", "bc")), "").fingerprint)


def test_split_is_deterministic_disjoint_and_complete():
    c = _corpus(2000)
    train, val = c.split(0.05)
    again_train, again_val = c.split(0.05)
    assert [d.name for d in train] == [d.name for d in again_train]
    assert [d.name for d in val] == [d.name for d in again_val]
    names_t, names_v = {d.name for d in train}, {d.name for d in val}
    assert not names_t & names_v
    assert names_t | names_v == {d.name for d in c}
    assert 0.03 < len(val) / len(c) < 0.07
    # Each document's side depends only on its name: a subset keeps every assignment.
    sub_train, sub_val = Corpus(c.documents[:1000], "sub").split(0.05)
    assert {d.name for d in sub_val} == {d.name for d in val if d.name < "doc1000"}
    assert train.fingerprint != val.fingerprint


@pytest.mark.parametrize("n", [2, 3, 5])
def test_split_gives_each_side_a_document(n):
    for fraction in (0.001, 0.5, 0.999):
        train, val = _corpus(n).split(fraction)
        assert len(train) >= 1 and len(val) >= 1 and len(train) + len(val) == n


def test_split_of_one_document_keeps_it_for_training():
    train, val = _corpus(1).split()
    assert len(train) == 1 and len(val) == 0
    with pytest.raises(ValueError, match="validation_fraction"):
        _corpus(3).split(1.0)


def test_unigram_entropy_in_nats():
    assert unigram_entropy([7, 7, 7]) == 0.0
    assert unigram_entropy(np.array([0, 1, 2, 3] * 5)) == pytest.approx(math.log(4))
    p = np.array([0.5, 0.25, 0.25])
    assert unigram_entropy([0, 0, 1, 2]) == pytest.approx(-(p * np.log(p)).sum())
    with pytest.raises(ValueError):
        unigram_entropy([])


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA_ARCH_LAB_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("GEMMA_ARCH_LAB_CACHE")
    assert cache_root() == Path.home() / ".cache" / "gemma-arch-lab"


def test_default_corpus_is_stdlib_without_tests_plus_pydoc_topics():
    from pydoc_data.topics import topics

    c = load_corpus(None)
    names = [d.name for d in c]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert "stdlib/os.py" in names and "stdlib/json/decoder.py" in names
    pydoc = {n.removeprefix("pydoc:") for n in names if n.startswith("pydoc:")}
    assert pydoc == {k for k, v in topics.items() if v.strip()} and len(pydoc) > 50
    assert dict(c.documents)["pydoc:for"] == topics["for"]
    excluded = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
    for n in names:
        if n.startswith("stdlib/"):
            assert not excluded & set(n.split("/")[1:-1]), n
            assert n.endswith(".py")
    assert "stdlib/idlelib/idle_test/htest.py" not in names
    assert "stdlib/pydoc_data/topics.py" not in names  # the topics are already documents
    assert c.num_chars > 5_000_000
