"""Text corpora: the built-in default (the Python standard library) and user data (`--data`).

A corpus is an ordered tuple of `Document(name, text)`. Order is sorted by name so that every
derived artefact (fingerprint, split, tokenizer, token stream) is reproducible across machines.

Accepted user inputs: a folder (searched recursively), one file, or a list of files, of kind
`.txt` / `.md` / `.py` (one document per file), `.jsonl` (one document per line, its `text` field)
or `.parquet` (one document per row of its `text` column, read with pyarrow).
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from pydoc_data.topics import topics
from typing import NamedTuple

import numpy as np
import pyarrow.parquet as pq

TEXT_SUFFIXES = (".txt", ".md", ".py")
ALLOWED_SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".parquet")
ALLOWED = "a folder, or files ending in " + " / ".join(ALLOWED_SUFFIXES)
VALIDATION_FRACTION = 0.05
CACHE_ENV = "GEMMA_ARCH_LAB_CACHE"

# Folders of the standard library that are not "the library": test suites and their data files
# (lib2to3/tests/data holds deliberately broken Python), installed third-party packages, build config.
_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


class Document(NamedTuple):
    """One unit of text; the split into train / validation never cuts through a document."""

    name: str
    text: str


@dataclass(frozen=True)
class Corpus:
    """An ordered, immutable collection of documents plus a description of where it came from."""

    documents: tuple[Document, ...]
    source: str

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self):
        return iter(self.documents)

    @cached_property
    def num_chars(self) -> int:
        return sum(len(d.text) for d in self.documents)

    @cached_property
    def fingerprint(self) -> str:
        """Short sha256 over (name, text) of every document in order; changes when any byte does."""
        h = hashlib.sha256()
        for name, text in self.documents:
            # Length prefixes make the encoding unambiguous ("ab"+"c" differs from "a"+"bc").
            for part in (name.encode(), text.encode("utf-8", "surrogatepass")):
                h.update(len(part).to_bytes(8, "little"))
                h.update(part)
        return h.hexdigest()[:16]

    def split(self, validation_fraction: float = VALIDATION_FRACTION) -> tuple[Corpus, Corpus]:
        """Deterministic (train, validation) split by document, decided by a hash of each name.

        A name's hash does not depend on the other documents, so adding files to a folder never moves
        an existing document across the split. With two or more documents both splits are non-empty.
        """
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction={validation_fraction!r}; expected a value in (0, 1)")
        scores = [_name_score(d.name) for d in self.documents]
        is_val = [s < validation_fraction for s in scores]
        if len(self.documents) >= 2:
            if not any(is_val):  # promote the document closest to the validation side
                is_val[int(np.argmin(scores))] = True
            if all(is_val):
                is_val[int(np.argmax(scores))] = False
        train = tuple(d for d, v in zip(self.documents, is_val) if not v)
        val = tuple(d for d, v in zip(self.documents, is_val) if v)
        return Corpus(train, f"{self.source}[train]"), Corpus(val, f"{self.source}[validation]")

    def __repr__(self) -> str:
        return (f"Corpus(source={self.source!r}, documents={len(self)}, chars={self.num_chars}, "
                f"fingerprint={self.fingerprint})")


def _name_score(name: str) -> float:
    """Map a document name to a stable pseudo-uniform number in [0, 1)."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Root of all caches: the argument, else $GEMMA_ARCH_LAB_CACHE, else ~/.cache/gemma-arch-lab."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "gemma-arch-lab"


def unigram_entropy(token_ids: Iterable[int] | np.ndarray) -> float:
    """Entropy in nats of the empirical unigram distribution: the loss of a model that ignores context.

    A trained language model should reach a cross-entropy (also in nats) well below this number.
    """
    ids = np.asarray(token_ids if isinstance(token_ids, np.ndarray) else list(token_ids), dtype=np.int64)
    if ids.size == 0:
        raise ValueError("unigram_entropy of an empty token sequence is undefined")
    counts = np.bincount(ids.ravel())
    p = counts[counts > 0] / ids.size
    return float(-(p * np.log(p)).sum())


# ----------------------------------------------------------------------------------------- default
def default_corpus() -> Corpus:
    """The standard library source of the running interpreter plus its `pydoc_data` topics."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = [Document(f"pydoc:{k}", v) for k, v in topics.items() if v.strip()]
    for path in _walk(root, prune=_stdlib_prune):
        rel = path.relative_to(root).as_posix()
        # pydoc_data/topics.py is the topics dict again as source; the topics are added above.
        if path.suffix != ".py" or rel == "pydoc_data/topics.py":
            continue
        # tokenize.open honours PEP 263 coding cookies, as the interpreter itself does.
        try:
            with tokenize.open(path) as f:
                text = f.read()
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue  # a broken file in someone's install should not break the default corpus
        if text.strip():
            docs.append(Document("stdlib/" + rel, text))
    docs.sort(key=lambda d: d.name)
    return Corpus(tuple(docs), "default")


def _stdlib_prune(dirname: str) -> bool:
    return dirname in _EXCLUDED_DIRS or dirname.startswith(("config-", "."))


def _walk(root: Path, prune) -> list[Path]:
    """Files under root, sorted, skipping hidden entries and folders for which prune(name) is true."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not prune(d))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return sorted(out)


# -------------------------------------------------------------------------------------------- user
def load_corpus(path: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> Corpus:
    """Load the default corpus (`None`) or user data; see the module docstring for what is allowed.

    Raises ValueError naming the path and the problem for anything unreadable or empty.
    """
    if path is None:
        return default_corpus()
    paths = [Path(path)] if isinstance(path, str | os.PathLike) else [Path(p) for p in path]
    if not paths:
        raise ValueError(f"--data: an empty list of paths; expected {ALLOWED}")
    files: list[tuple[Path, str]] = []  # (file, document name prefix)
    for p in paths:
        if not p.exists():
            raise ValueError(f"--data {p}: no such file or folder; expected {ALLOWED}")
        if p.is_dir():
            found = _walk(p, prune=lambda d: d.startswith(".") or d == "__pycache__")
            usable = [f for f in found if f.suffix.lower() in ALLOWED_SUFFIXES]
            if not usable:
                raise ValueError(f"--data {p}: folder holds {len(found)} files, none ending in "
                                 f"{' / '.join(ALLOWED_SUFFIXES)}")
            files.extend((f, f.relative_to(p).as_posix()) for f in usable)
        else:
            if p.suffix.lower() not in ALLOWED_SUFFIXES:
                raise ValueError(f"--data {p}: unknown extension {p.suffix!r}; expected {ALLOWED}")
            files.append((p, p.name if len(paths) == 1 else p.as_posix()))
    docs: list[Document] = []
    for f, name in files:
        docs.extend(_read_file(f, name))
    if not docs:
        where = ", ".join(str(p) for p in paths)
        raise ValueError(f"--data {where}: no text found (all documents empty); expected non-empty {ALLOWED}")
    docs.sort(key=lambda d: d.name)
    names = [d.name for d in docs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"--data: document name {dup!r} appears twice; pass each file once")
    source = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more)"
    return Corpus(tuple(docs), source)


def _read_file(path: Path, name: str) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path, name)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as e:
        raise ValueError(f"--data {path}: cannot read ({e.strerror or e}); expected {ALLOWED}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"--data {path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if suffix == ".jsonl":
        return _parse_jsonl(path, name, text)
    return [Document(name, text)] if text.strip() else []


def _parse_jsonl(path: Path, name: str, text: str) -> list[Document]:
    docs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"--data {path}:{lineno}: invalid JSON ({e.msg}); expected one object "
                             f"per line with a string field 'text'") from e
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"--data {path}:{lineno}: no string field 'text' (got {got}); expected one "
                             f"object per line with a string field 'text'")
        if record["text"].strip():
            docs.append(Document(f"{name}:{lineno:09d}", record["text"]))
    return docs


def _read_parquet(path: Path, name: str) -> list[Document]:
    # pyarrow's own errors (ArrowInvalid is itself a ValueError) carry no path: wrap them all.
    try:
        names = pq.read_schema(path).names
        column = pq.read_table(path, columns=["text"]).column("text").to_pylist() if "text" in names else None
    except Exception as e:
        raise ValueError(f"--data {path}: cannot read as parquet ({e})") from e
    if column is None:
        raise ValueError(f"--data {path}: no 'text' column (columns: {names}); "
                         f"expected a string column named 'text'")
    docs = []
    for row, value in enumerate(column):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"--data {path}: column 'text' holds {type(value).__name__}, expected strings")
        if value and value.strip():
            docs.append(Document(f"{name}:{row:09d}", value))
    return docs
