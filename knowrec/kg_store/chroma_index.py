"""ItemIndex over Chroma: one document per item, embedded with knowrec's own embedder (never Chroma's default)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from knowrec.errors import ConfigError, StoreUnavailable
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


def _is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is a transport failure rather than an error the server answered with."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionError | TimeoutError):
            return True
        if type(seen).__module__.startswith(("httpx", "httpcore")) and "Error" in type(seen).__name__:
            return not type(seen).__name__.startswith("HTTPStatus")
        if isinstance(seen, ValueError) and "Could not connect to a Chroma server" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def KnowrecEmbeddingFunction(embedder: Embedder) -> Any:
    """The registered Chroma embedding function wrapping ``embedder``."""
    return _embedding_function_class()(embedder)


class ChromaItemIndex:
    """Item vectors in Chroma: embedded (``path``) or a server (``url``, or ``host``/``port``).

    No I/O happens in the constructor; the first use (or :meth:`verify`) opens the collection and raises
    :class:`~knowrec.errors.StoreUnavailable` naming the location when that fails. A server is probed with a short
    timeout first, so an unreachable one fails in seconds rather than hanging.

    Args:
        embedder: embeds documents (and is registered as the collection's embedding function).
        path: folder of an embedded Chroma (``PersistentClient``).
        url: a Chroma server, e.g. ``http://127.0.0.1:8000`` (``https://`` turns TLS on).
        token: sent as ``Authorization: Bearer <token>`` to the server.
        host: a Chroma server by host name (with ``port``, default 8000); kept for callers that have no URL.
        port: the server port with ``host``.
        collection: collection name.
        connect_timeout: seconds allowed to reach the server (probe and each connection).
        exact_max_items: an embedded index holding at most this many items answers :meth:`query` by exact search
            over its vectors in memory instead of Chroma's HNSW graph (which is approximate, and not the same when
            built twice from the same vectors); 0: always HNSW. A server index always uses HNSW.

    Raises:
        ConfigError: not exactly one of ``path``, ``url`` and ``host``; ``port`` without ``host``; a ``url`` that is
            not ``http(s)://host[:port]``.

    Example (opens Chroma on disk or a server; not run as a doctest)::

        idx = ChromaItemIndex(embedder, path=Path("/tmp/kr/chroma"))
        idx = ChromaItemIndex(embedder, url="http://127.0.0.1:8000")
        idx.upsert(["1"], ["Toy Story (1995). Genres: Animation"])
        # → 1
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        path: Path | None = None,
        url: str | None = None,
        token: str | None = None,
        host: str | None = None,
        port: int | None = None,
        collection: str = COLLECTION,
        connect_timeout: float = 5.0,
        exact_max_items: int = 50_000,
    ) -> None:
        if sum(x is not None for x in (path, url, host)) != 1:
            raise ConfigError("Chroma item index: give exactly one of path (embedded), url (server) or host (server)")
        if port is not None and host is None:
            raise ConfigError("Chroma item index: port goes with host")
        self.embedder = embedder
        self.path = path
        self.collection_name = collection
        self.connect_timeout = connect_timeout
        self._token = token
        self._prefix = ""
        if url is not None:
            parsed = urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ConfigError(f"Chroma url must look like http://host:port (got {url!r})")
            self.ssl = parsed.scheme == "https"
            self.host: str | None = parsed.hostname
            try:
                self.port: int | None = parsed.port or (443 if self.ssl else 8000)
            except ValueError as exc:
                raise ConfigError(f"Chroma url has a bad port: {url!r}") from exc
            self._prefix = parsed.path.rstrip("/")
        else:
            self.ssl = False
            self.host = host
            self.port = (port or 8000) if host is not None else None
        self._client: Any = None
        self._col: Any = None
        self._open_lock = threading.Lock()
        # item vectors already read (they only change when this index writes them; see vectors())
        self._vectors: dict[str, np.ndarray] = {}
        self._vector_writes = 0  # bumped by every write here: a read that overlapped one is not cached
        self.vector_cache_items = 250_000
        self.exact_max_items = exact_max_items
        # exact search: (write count when read, ids, unit vectors), or (write count, None, None) when too many items
        self._exact: tuple[int, list[str] | None, np.ndarray | None] | None = None
        self._exact_lock = threading.Lock()

    @property
    def is_server(self) -> bool:
        return self.path is None

    @property
    def location(self) -> str:
        """The folder (embedded) or the server URL (without credentials)."""
        if self.path is not None:
            return str(self.path)
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}{self._prefix}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _probe(self) -> None:
        """``GET /api/v2/heartbeat`` with a short timeout; raises :class:`StoreUnavailable` with one clear message."""
        url = f"{self.location}/api/v2/heartbeat"
        req = urllib.request.Request(url, headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=self.connect_timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            hint = " (check KNOWREC_CHROMA_TOKEN)" if exc.code in (401, 403) else " (is it a Chroma 1.x server?)"
            raise StoreUnavailable(
                f"Chroma server at {self.location} answered HTTP {exc.code} to its heartbeat{hint}"
            ) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StoreUnavailable(
                f"cannot reach the Chroma server at {self.location}: {reason} "
                f"(is `chroma run` / the chroma service up? set KNOWREC_CHROMA_URL)"
            ) from None

    def _http_client(self) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        headers = self._headers() or None
        if self._prefix or (self.host and ":" in self.host):  # a path prefix or IPv6: chromadb takes a full URL
            client = chromadb.HttpClient(host=self.location, ssl=self.ssl, headers=headers, settings=chroma_settings)
        else:
            client = chromadb.HttpClient(
                host=str(self.host),
                port=int(self.port or 8000),
                ssl=self.ssl,
                headers=headers,
                settings=chroma_settings,
            )
        # chromadb's httpx session has no timeout at all: bound the connect phase (requests may still take long)
        session = getattr(getattr(client, "_server", None), "_session", None)
        if session is not None:
            import httpx

            session.timeout = httpx.Timeout(None, connect=self.connect_timeout)
        return client

    def _collection(self) -> Any:
        if self._col is not None:
            return self._col
        with self._open_lock:  # two requests arriving together open one client, not two on the same folder
            return self._open_collection()

    def _open_collection(self) -> Any:
        if self._col is not None:
            return self._col
        if self.is_server:
            self._probe()
        try:
            if self.path is not None:
                import chromadb
                from chromadb.config import Settings as ChromaSettings

                self.path.mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(
                    path=str(self.path), settings=ChromaSettings(anonymized_telemetry=False)
                )
            else:
                client = self._http_client()
            col = client.get_or_create_collection(
                self.collection_name,
                embedding_function=KnowrecEmbeddingFunction(self.embedder),
                configuration={"hnsw": {"space": "cosine"}},
            )
        except Exception as exc:
            raise StoreUnavailable(f"cannot open Chroma at {self.location}: {exc or type(exc).__name__}") from exc
        self._client, self._col = client, col
        return col

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn a lost server connection into :class:`StoreUnavailable` naming the URL."""
        try:
            yield
        except StoreUnavailable:
            raise
        except Exception as exc:
            if self.is_server and _is_connection_error(exc):
                raise StoreUnavailable(f"lost the Chroma server at {self.location}: {exc}") from exc
            raise

    def verify(self) -> None:
        """Open the collection and, for a server, check it answers now (every call: readiness probes use this);
        raises :class:`StoreUnavailable` naming the location if that fails."""
        opened = self._col is not None
        self._collection()
        if opened and self.is_server:
            self._probe()

    def upsert(self, ids: Sequence[str], documents: Sequence[str], progress: Progress | None = None) -> int:
        self._forget(ids)
        col = self._collection()
        written = 0
        with self._guard(), self._forgetting(ids):
            max_batch = min(int(self._client.get_max_batch_size()), 512)
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
        with self._guard():
            for start in range(0, len(ids), 5000):
                got = col.get(ids=list(ids[start : start + 5000]), include=["metadatas"])
                for i, meta in zip(got["ids"], got["metadatas"] or [], strict=False):
                    out[i] = str((meta or {}).get("doc_hash", ""))
        return out

    def snapshot(self, ids: Sequence[str]) -> object:
        if not ids:
            return None
        col = self._collection()
        with self._guard():
            return col.get(ids=list(ids), include=["documents", "embeddings", "metadatas"])

    def restore(self, snapshot: object, remove: Sequence[str]) -> None:
        self.delete(remove)
        got: Any = snapshot
        if got and got.get("ids"):
            self._forget(got["ids"])
            col = self._collection()
            with self._guard(), self._forgetting(got["ids"]):
                col.upsert(
                    ids=got["ids"], documents=got["documents"], embeddings=got["embeddings"], metadatas=got["metadatas"]
                )

    def delete(self, ids: Sequence[str]) -> None:
        self._forget(ids)
        if ids:
            col = self._collection()
            with self._guard(), self._forgetting(ids):
                for start in range(0, len(ids), 5000):
                    col.delete(ids=list(ids[start : start + 5000]))

    def _forget(self, ids: Sequence[str]) -> None:
        self._vector_writes += 1
        for i in ids:
            self._vectors.pop(i, None)

    @contextlib.contextmanager
    def _forgetting(self, ids: Sequence[str]) -> Iterator[None]:
        """Forget ``ids``' cached vectors again once the write is over (also when it fails): a read that ran
        beside the write may have cached the old ones."""
        try:
            yield
        finally:
            self._forget(ids)

    def _cache(self, fetched: dict[str, np.ndarray], writes: int) -> None:
        """Keep vectors read while the write count was ``writes``, unless a write happened meanwhile."""
        for v in fetched.values():
            v.flags.writeable = False
        if writes == self._vector_writes and len(self._vectors) + len(fetched) <= self.vector_cache_items:
            self._vectors.update(fetched)

    def preload(self, batch_size: int = 5000) -> int:
        """Read every stored vector into the cache of :meth:`vectors`, when they fit (``vector_cache_items``).

        A long-lived process (a server, an evaluation) calls this once (``Recommender.warm_up``): at 100k items a
        recommendation otherwise reads its candidates' vectors, which differ from user to user, from Chroma for the
        first few hundred users (3 ms of a 40 ms call on a fast 2-core machine, 13 ms on a slower one;
        ``docs/benchmarks/retrieval.md``). Returns how many vectors the cache holds (0 when the collection is too
        large: nothing is read). 100k vectors take ~150 MB and ~5 s to read.
        """
        col = self._collection()
        with self._guard():
            total = int(col.count())
        if total > self.vector_cache_items:
            return 0
        for offset in range(0, total, batch_size):
            writes = self._vector_writes
            with self._guard():
                got = col.get(limit=batch_size, offset=offset, include=["embeddings"])
            embs = got.get("embeddings")
            if embs is not None:
                self._cache({i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], embs, strict=True)}, writes)
        return len(self._vectors)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``ids`` (missing ids left out), in the order asked.

        Vectors once read are kept in memory (up to ``vector_cache_items``; a 384-d vector is 1.5 kB, so 100k items
        take 150 MB) and forgotten when this index writes or deletes the item. A write by another process (another
        client of the same Chroma server or folder) is seen after a restart.
        """
        if not ids:
            return {}
        cache = self._vectors
        missing = [i for i in dict.fromkeys(ids) if i not in cache]
        fetched: dict[str, np.ndarray] = {}
        if missing:
            col = self._collection()
            writes = self._vector_writes
            with self._guard():
                got = col.get(ids=missing, include=["embeddings"])
            embs = got.get("embeddings")
            if embs is not None:
                fetched = {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], embs, strict=True)}
                self._cache(fetched, writes)
        out: dict[str, np.ndarray] = {}
        for i in ids:
            vec = cache.get(i)
            if vec is None:
                vec = fetched.get(i)
            if vec is not None:
                out[i] = vec
        return out

    def search_kind(self) -> str:
        """How :meth:`query` answers now: ``exact`` (an embedded index within ``exact_max_items``) or ``hnsw``."""
        if self.is_server or self.exact_max_items <= 0 or self.count() > self.exact_max_items:
            return "hnsw"
        return "exact"

    def _exact_matrix(self) -> tuple[list[str] | None, np.ndarray | None]:
        """Every stored vector, unit length, read once and again after a write by this index (a write by another
        process is seen after a restart); ``(None, None)`` for a server or a collection over ``exact_max_items``."""
        if self.is_server or self.exact_max_items <= 0:
            return None, None
        exact = self._exact
        if exact is not None and exact[0] == self._vector_writes:
            return exact[1], exact[2]
        with self._exact_lock:
            exact = self._exact
            if exact is not None and exact[0] == self._vector_writes:
                return exact[1], exact[2]
            col = self._collection()
            writes = self._vector_writes
            with self._guard():
                total = int(col.count())
                if total > self.exact_max_items:
                    self._exact = (writes, None, None)
                    return None, None
                ids: list[str] = []
                rows: list[np.ndarray] = []
                for offset in range(0, total, 5000):
                    got = col.get(limit=5000, offset=offset, include=["embeddings"])
                    embs = got.get("embeddings")
                    if embs is not None and len(got["ids"]):
                        ids.extend(got["ids"])
                        rows.append(np.asarray(embs, dtype=np.float32))
            matrix = np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms > 0, norms, 1.0)
            matrix.flags.writeable = False
            if writes == self._vector_writes:  # a write meanwhile: read again next time
                self._exact = (writes, ids, matrix)
            return ids, matrix

    def query(
        self, vector: np.ndarray, k: int, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[tuple[str, float]]:
        """The ``k`` items most similar to ``vector`` (cosine), best first, equal scores (to 6 decimals) by id.
        Exact (and so the same on every build of the same vectors) while an embedded index holds at most
        ``exact_max_items`` items; Chroma's HNSW above that and on a server."""
        if k <= 0:
            return []
        ids, matrix = self._exact_matrix()
        if ids is not None and matrix is not None:
            if not ids:
                return []
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
            norm = float(np.linalg.norm(v))
            sims = matrix @ (v / norm if norm > 0 else v)
            n = min(k + len(exclude) + 8, len(ids))
            if n < len(ids):  # the n best, and every item tied with the last of them (ties go by id below)
                cut = np.partition(-sims, n - 1)[n - 1]
                top = np.flatnonzero(-sims <= cut + 1e-6)
            else:
                top = np.arange(len(ids))
            exact_hits = [(ids[j], float(sims[j])) for j in top if ids[j] not in exclude]
            exact_hits.sort(key=lambda h: (-round(h[1], 6), h[0]))
            return exact_hits[:k]
        col = self._collection()
        with self._guard():
            # a few more than needed, so that equal scores at the cut are broken by id (Chroma's order for ties
            # varies); no count() first: Chroma (>= 1.0) returns what there is, and counting 100k items takes 12 ms
            n = k + len(exclude) + 8
            res = col.query(query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=n, include=["distances"])
        hits = [
            (item_id, 1.0 - float(dist))
            for item_id, dist in zip(res["ids"][0], res["distances"][0], strict=True)
            if item_id not in exclude
        ]
        hits.sort(key=lambda h: (-round(h[1], 6), h[0]))
        return hits[:k]

    def ids(self) -> set[str]:
        col = self._collection()
        out: set[str] = set()
        with self._guard():
            total = col.count()
            for offset in range(0, total, 5000):
                out.update(col.get(limit=5000, offset=offset, include=[])["ids"])
        return out

    def count(self) -> int:
        col = self._collection()
        with self._guard():
            return int(col.count())
