"""ItemIndex over Chroma: one document per item, embedded with knowrec's own embedder (never Chroma's default)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knowrec.errors import StoreUnavailable
from knowrec.kg_store.base import Embedder, Progress

__all__ = ["COLLECTION", "ChromaItemIndex", "KnowrecEmbeddingFunction"]

log = logging.getLogger(__name__)

COLLECTION = "knowrec_items"


def doc_hash(document: str) -> str:
    """Short content hash stored with each document."""
    return hashlib.sha1(document.encode()).hexdigest()[:16]


def _embedding_function_class() -> type:
    """Build (once) and register the Chroma embedding function class; imported lazily with chromadb."""
    global _EF_CLASS
    if _EF_CLASS is not None:
        return _EF_CLASS
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
    from chromadb.utils.embedding_functions import register_embedding_function

    class _KnowrecEF(EmbeddingFunction[Documents]):
        """Chroma embedding function backed by a knowrec :class:`Embedder` (the bundled MiniLM by default)."""

        def __init__(self, embedder: Embedder | None = None, model_path: str | None = None) -> None:
            if embedder is None:
                from knowrec.kg_store.embedder import SentenceTransformerEmbedder, bundled_embedder_path

                embedder = SentenceTransformerEmbedder(Path(model_path) if model_path else bundled_embedder_path())
            self._embedder = embedder

        def __call__(self, input: Documents) -> Embeddings:
            return list(self._embedder.embed(list(input)))

        @staticmethod
        def name() -> str:
            return "knowrec-sentence-transformer"

        def get_config(self) -> dict[str, Any]:
            path = getattr(self._embedder, "model_path", None)
            return {"model_path": str(path) if path else None}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> _KnowrecEF:
            return _KnowrecEF(model_path=config.get("model_path"))

        def default_space(self) -> str:
            return "cosine"

    with contextlib.suppress(ValueError):  # already registered earlier in this process
        register_embedding_function(_KnowrecEF)
    _EF_CLASS = _KnowrecEF
    return _KnowrecEF


_EF_CLASS: type | None = None


def KnowrecEmbeddingFunction(embedder: Embedder) -> Any:
    """The registered Chroma embedding function wrapping ``embedder``."""
    return _embedding_function_class()(embedder)


class ChromaItemIndex:
    """Item vectors in Chroma, embedded (``path``) or server (``host``/``port``).

    Example:
        >>> idx = ChromaItemIndex(embedder, path=Path("/tmp/kr/chroma"))  # doctest: +SKIP
        >>> idx.upsert(["1"], ["Toy Story (1995). Genres: Animation"])  # doctest: +SKIP
        1
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        path: Path | None = None,
        host: str | None = None,
        port: int | None = None,
        collection: str = COLLECTION,
    ) -> None:
        if (path is None) == (host is None):
            raise ValueError("give exactly one of path (embedded) or host (server)")
        self.embedder = embedder
        self.path = path
        self.host = host
        self.port = port
        self.collection_name = collection
        self._client: Any = None
        self._col: Any = None

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else f"http://{self.host}:{self.port}"

    def _collection(self) -> Any:
        if self._col is not None:
            return self._col
        try:
            import chromadb
            from chromadb.config import Settings as ChromaSettings

            chroma_settings = ChromaSettings(anonymized_telemetry=False)
            if self.path is not None:
                self.path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(self.path), settings=chroma_settings)
            else:
                self._client = chromadb.HttpClient(
                    host=str(self.host), port=int(self.port or 8000), settings=chroma_settings
                )
            self._col = self._client.get_or_create_collection(
                self.collection_name,
                embedding_function=KnowrecEmbeddingFunction(self.embedder),
                configuration={"hnsw": {"space": "cosine"}},
            )
        except Exception as exc:
            raise StoreUnavailable(f"cannot open Chroma at {self.location}: {exc}") from exc
        return self._col

    def verify(self) -> None:
        """Open the collection; raises :class:`StoreUnavailable` naming the location if that fails."""
        self._collection()

    def upsert(self, ids: Sequence[str], documents: Sequence[str], progress: Progress | None = None) -> int:
        col = self._collection()
        max_batch = min(int(self._client.get_max_batch_size()), 512)
        written = 0
        for start in range(0, len(ids), max_batch):
            chunk_ids = list(ids[start : start + max_batch])
            chunk_docs = list(documents[start : start + max_batch])
            vecs = self.embedder.embed(chunk_docs)
            metas = [{"doc_hash": doc_hash(d)} for d in chunk_docs]
            col.upsert(ids=chunk_ids, documents=chunk_docs, embeddings=vecs, metadatas=metas)
            written += len(chunk_ids)
            if progress is not None:
                progress("index", len(chunk_ids))
        return written

    def doc_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        col = self._collection()
        out: dict[str, str] = {}
        for start in range(0, len(ids), 5000):
            got = col.get(ids=list(ids[start : start + 5000]), include=["metadatas"])
            for i, meta in zip(got["ids"], got["metadatas"] or [], strict=False):
                out[i] = str((meta or {}).get("doc_hash", ""))
        return out

    def snapshot(self, ids: Sequence[str]) -> object:
        if not ids:
            return None
        return self._collection().get(ids=list(ids), include=["documents", "embeddings", "metadatas"])

    def restore(self, snapshot: object, remove: Sequence[str]) -> None:
        self.delete(remove)
        got: Any = snapshot
        if got and got.get("ids"):
            self._collection().upsert(
                ids=got["ids"], documents=got["documents"], embeddings=got["embeddings"], metadatas=got["metadatas"]
            )

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            col = self._collection()
            for start in range(0, len(ids), 5000):
                col.delete(ids=list(ids[start : start + 5000]))

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        got = self._collection().get(ids=list(ids), include=["embeddings"])
        embs = got.get("embeddings")
        if embs is None:
            return {}
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], embs, strict=True)}

    def query(
        self, vector: np.ndarray, k: int, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[tuple[str, float]]:
        col = self._collection()
        total = col.count()
        if total == 0 or k <= 0:
            return []
        n = min(total, k + len(exclude))
        res = col.query(query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=n, include=["distances"])
        out: list[tuple[str, float]] = []
        for item_id, dist in zip(res["ids"][0], res["distances"][0], strict=True):
            if item_id in exclude:
                continue
            out.append((item_id, 1.0 - float(dist)))
            if len(out) >= k:
                break
        return out

    def ids(self) -> set[str]:
        col = self._collection()
        out: set[str] = set()
        total = col.count()
        for offset in range(0, total, 5000):
            out.update(col.get(limit=5000, offset=offset, include=[])["ids"])
        return out

    def count(self) -> int:
        return int(self._collection().count())
