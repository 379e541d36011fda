"""The SDK facade, and the one place that builds stores, embedder and LLM clients from :class:`Settings`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from knowrec.agent.chat import ChatAgent, SessionStore
from knowrec.agent.explain import LLMExplainer
from knowrec.agent.llm.base import LLMClient
from knowrec.agent.pipeline import Pipeline
from knowrec.agent.rank import Ranker, RetrievalRanker
from knowrec.agent.retrieve import (
    CandidateGenerator,
    CollaborativeGenerator,
    KGGenerator,
    PopularityGenerator,
    SequentialGenerator,
    VectorGenerator,
)
from knowrec.builders import build_embedder, build_index, build_llm, build_ranker, build_store
from knowrec.config import Settings, with_overrides
from knowrec.errors import ConfigError, InvalidInput, NotFound
from knowrec.extraction.extract import ExtractSummary
from knowrec.fitting import FittedModels
from knowrec.kg_store.base import Embedder, GraphStore, ItemIndex
from knowrec.kg_store.ingest import ingest_dataset, rich_progress
from knowrec.types import (
    ChatProgress,
    ChatTurn,
    IngestSummary,
    Item,
    ItemDetails,
    Recommendation,
    RecQuery,
    SessionProfile,
)

__all__ = ["Recommender"]

log = logging.getLogger(__name__)


class Recommender:
    """Ingest data and get explained, diversity-aware recommendations.

    Nothing is opened or loaded until first used; :meth:`verify` checks everything up front.

    Example:
        >>> from knowrec import Recommender, Settings
        >>> rec = Recommender(Settings(data_dir="/tmp/knowrec-doc"))  # doctest: +SKIP
        >>> rec.ingest_demo()  # doctest: +SKIP
        >>> r = rec.recommend("1", k=5)  # doctest: +SKIP
        >>> [(it.title, it.reasons[0].text) for it in r.items]  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: GraphStore | None = None,
        index: ItemIndex | None = None,
        embedder: Embedder | None = None,
        llm: LLMClient | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._store = store
        self._index = index
        self._embedder = embedder
        self._llm = llm
        self._owns_llm = False  # only a client built here is closed by close(); an injected one may be shared
        self._pipeline: Pipeline | None = None
        self._build_lock = threading.RLock()  # clients are built once, even when two threads ask first together

    # -- clients, built once on first use (by knowrec.builders) ------------------------------------------------------
    @property
    def store(self) -> GraphStore:
        if self._store is not None:
            return self._store
        with self._build_lock:
            return self._build_store()

    def _build_store(self) -> GraphStore:
        if self._store is None:
            self._store = build_store(self.settings)
        return self._store

    @property
    def embedder(self) -> Embedder:
        if self._embedder is not None:
            return self._embedder
        with self._build_lock:
            return self._build_embedder()

    def _build_embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = build_embedder(self.settings)
        return self._embedder

    @property
    def index(self) -> ItemIndex:
        if self._index is not None:
            return self._index
        with self._build_lock:
            return self._build_index()

    def _build_index(self) -> ItemIndex:
        if self._index is None:
            self._index = build_index(self.settings, self.embedder)
        return self._index

    @property
    def llm(self) -> LLMClient | None:
        """The configured LLM client, or ``None`` with ``llm.backend='none'``."""
        if self._llm is not None:
            return self._llm
        with self._build_lock:
            return self._build_llm()

    def _build_llm(self) -> LLMClient | None:
        if self._llm is None:
            self._llm, self._owns_llm = build_llm(self.settings)
        return self._llm

    def _ranker(self, mode: str) -> Ranker:
        return build_ranker(self.settings, mode, None if mode == "none" else self.llm)

    @cached_property
    def models(self) -> FittedModels:
        """The fitted models of the data dir (EASE, sequential, item statistics, fusion); parts may be missing."""
        return FittedModels.load(self.settings.models_path)

    def _generators(self, models: FittedModels | None = None) -> list[CandidateGenerator]:
        cfg = self.settings.retrieval
        m = self.models if models is None else models
        make: dict[str, Any] = {
            "sequential": lambda: SequentialGenerator(m.sequential),
            "vector": lambda: VectorGenerator(self.index, self.embedder),
            "kg": lambda: KGGenerator(self.store, max_entity_items=cfg.max_entity_items),
            "collaborative": lambda: CollaborativeGenerator(m.ease),
            "popularity": lambda: PopularityGenerator(self.store, m.stats),
        }
        return [make[name]() for name in cfg.generators]

    def _retrieval_pipeline(self, models: FittedModels, *, fused: bool = False) -> Pipeline:
        """A retrieval-only pipeline over the given models: with RRF (fitting builds the fusion's examples with it),
        or (``fused``) with the configured fusion and the models' fitted fusion, as in serving."""
        return Pipeline(
            store=self.store,
            index=self.index,
            generators=self._generators(models),
            ranker=RetrievalRanker(),
            retrieval=self.settings.retrieval
            if fused
            else self.settings.retrieval.model_copy(update={"fusion": "rrf"}),
            ranking=self.settings.ranker,
            diversify=self.settings.diversify,
            explain=self.settings.explain,
            fusion=models.fusion if fused else None,
            cold_fusion=models.cold_fusion if fused else None,
            constrained_fusion=models.constrained_fusion if fused else None,
            stats=models.stats,
            sequence_len=self.settings.fit.sequential.max_len,
        )

    def tune(
        self, out: Path | str, *, progress: bool | None = None, resume: bool = False, **overrides: Any
    ) -> dict[str, Any]:
        """LoRA-tune the LLM ranker on the stored interactions and knowledge graph (see :mod:`knowrec.tuning`).

        Args:
            out: the output folder: ``adapter/`` (PEFT, for vLLM and torch), ``adapter.gguf`` (llama.cpp),
                ``manifest.json``. Serve it with ``llm.adapter = out``.
            progress: show progress bars (default: ``settings.progress``).
            resume: continue from the checkpoint in ``out``.
            overrides: fields of ``settings.tune`` (``examples=200``, ``objectives=("ranking",)``, …); a bad one
                raises :class:`~knowrec.errors.InvalidSetting`.

        Returns:
            The manifest: base model, data fingerprint, objectives, examples, validation curve and best NDCG@10.

        Example (needs a populated data dir; not run as a doctest)::

            rec.tune("my-adapter", examples=300)["best"]["ndcg@10"]
            # → 0.41
        """
        from knowrec.tuning import tune

        cfg = with_overrides(self.settings.tune, overrides, "tune")
        show = self.settings.progress if progress is None else progress
        return tune(self, Path(out), cfg, progress=show, resume=resume)

    def extract_facts(
        self,
        items: list[str] | None = None,
        *,
        out: Path | str | None = None,
        retry_failed: bool = False,
        progress: bool | None = None,
        **overrides: Any,
    ) -> ExtractSummary:
        """Extract facts about items from their text with the LLM and store them (source ``llm``, with provenance).

        See :mod:`knowrec.extraction`. Only evidence-backed facts are kept; objects resolve to stored entities or
        become new ones. Resumable and idempotent: results are kept per item in ``out``.

        Args:
            items: item ids; ``None``: every stored item.
            out: the per-item results and the review report (``report.md``); default ``<data dir>/extract``.
            retry_failed: ask again for items whose last answer failed.
            progress: show a progress bar (default: ``settings.progress``).
            overrides: fields of ``settings.extract`` (``fields=("text", "plot")``, ``schema_file=...``, …).

        Example (needs a populated data dir; not run as a doctest)::

            rec.extract_facts(["6"]).kept
            # → 3
        """
        from knowrec.extraction import EntityResolver, ExtractionRun, FactExtractor, default_schema, load_schema

        cfg = with_overrides(self.settings.extract, overrides, "extract")
        llm = self.llm
        if llm is None:
            raise ConfigError("kg extract needs an LLM: set llm.backend to llama_cpp or http")
        schema = load_schema(cfg.schema_file) if cfg.schema_file else default_schema(cfg.domain)
        store = self.store
        if items is not None:
            found = store.items(items)
            missing = [i for i in items if i not in found]
            if missing:
                raise NotFound(f"{len(missing)} item id(s) are not stored: {', '.join(missing[:5])}")
            chosen: Any = [found[i] for i in items]
            total = len(items)
        else:
            chosen = (it for batch in store.iter_items() for it in batch)
            total = store.stats()["items"]
        entities = (e for batch in store.iter_entities() for e in batch)
        resolver = EntityResolver(entities, schema, self.embedder, cfg.similarity_threshold)
        concurrency = cfg.concurrency or (self.settings.llm.concurrency if self.settings.llm.backend == "http" else 1)
        adapter = self.settings.llm.adapter or ""
        run = ExtractionRun(
            store,
            FactExtractor(llm, schema, cfg),
            resolver,
            Path(out) if out is not None else self.settings.data_dir / "extract",
            concurrency=concurrency,
            write_every=cfg.write_every,
            adapter=adapter,
        )
        show = self.settings.progress if progress is None else progress
        with _extract_bar(show, total) as tick:
            summary = run.run(chosen, retry_failed=retry_failed, on_item=tick)
        if summary.written:
            self._pipeline = None
        return summary

    def fit(
        self,
        *,
        progress: bool | None = None,
        reuse: Path | list[Path] | None = None,
        protect: Mapping[str, Collection[str]] | None = None,
    ) -> dict[str, Any]:
        """Fit EASE, the sequential model, the item statistics and the learned fusion on the stored interactions.

        See :mod:`knowrec.fitting` for the procedure (held-out next items, early stopping, seed). The models go to
        ``<data dir>/models`` with a ``manifest.json``; the next recommendation uses them.

        Args:
            progress: show progress bars (default: ``settings.progress``).
            reuse: models folders whose probe stage (fusion, epoch count) or sequential model may be reused where
                they were fitted on the same data and settings (the bundled demo ships one).
            protect: per user, evaluation items that may be fitted on but are never a held-out label (``knowrec
                eval``'s validation items in its test phase).

        Returns:
            The manifest: fitted-at time, data fingerprint, chosen epochs, validation NDCG, timings.

        Example (needs a populated data dir; not run as a doctest)::

            rec.fit()["sequential"]["best_epoch"]
            # → 35
        """
        from knowrec.fitting import fit_models

        show = self.settings.progress if progress is None else progress
        manifest = fit_models(
            self.store,
            self.settings.models_path,
            self.settings.fit,
            self.settings.retrieval,
            self._retrieval_pipeline,
            progress=show,
            reuse=reuse,
            sequence_len=self.settings.fit.sequential.max_len,
            protect=protect,
        )
        self.__dict__.pop("models", None)
        self._pipeline = None
        return manifest

    def pipeline(self, mode: str | None = None) -> Pipeline:
        """The pipeline for a ranking mode (default: the configured one)."""
        mode = mode or self.settings.ranker.mode
        pipe = self._pipeline
        if pipe is not None and pipe.ranker.mode == mode:
            return pipe
        with self._build_lock:
            return self._build_pipeline(mode)

    def _build_pipeline(self, mode: str) -> Pipeline:
        if self._pipeline is not None and self._pipeline.ranker.mode == mode:
            return self._pipeline
        llm = self.llm if mode != "none" or self.settings.explain.mode == "llm" else None
        pipe = Pipeline(
            store=self.store,
            index=self.index,
            generators=self._generators(),
            ranker=self._ranker(mode),
            retrieval=self.settings.retrieval,
            ranking=self.settings.ranker,
            diversify=self.settings.diversify,
            explain=self.settings.explain,
            explainer=LLMExplainer(llm) if llm is not None and self.settings.explain.mode == "llm" else None,
            fusion=self.models.fusion,
            cold_fusion=self.models.cold_fusion,
            constrained_fusion=self.models.constrained_fusion,
            stats=self.models.stats,
            sequence_len=self.settings.fit.sequential.max_len,
        )
        if mode == self.settings.ranker.mode:
            self._pipeline = pipe
        return pipe

    def warm_up(self, mode: str | None = None) -> dict[str, float]:
        """Load now what the first recommendations would otherwise load: the fitted models and the pipeline, the
        in-process LLM when the ranking ``mode`` uses one (in a new process on 2 cores about 19 s the first time ever,
        while the torch engine converts the bundled GGUF and keeps the dequantised weights; then about 9 s, mostly
        imports), the graph store's in-memory item–entity links, and every item vector (when they fit the index's
        cache).

        A long-lived process calls it once at start (``knowrec serve`` does, and ``knowrec chat`` while you type); a
        one-off command need not. Returns the seconds each part took (a part the configured stores, LLM backend or
        mode do not have is left out).
        """
        import time

        timings: dict[str, float] = {}

        def timed(name: str, fn: Callable[[], object]) -> None:
            t = time.perf_counter()
            fn()
            timings[name] = round(time.perf_counter() - t, 3)

        timed("pipeline", lambda: self.pipeline(mode))
        if (mode or self.settings.ranker.mode) != "none" and self.settings.llm.backend == "llama_cpp":
            llm = self.llm  # in process: its weights load now (a server behind llm.base_url loads its own)
            load = getattr(llm, "verify", None)
            if load is not None:
                timed("llm", load)
        links = getattr(self.store, "warm_up", None)  # the SQLite store; Neo4j keeps its own caches
        if links is not None:
            timed("kg_links", links)
        vectors = getattr(self.index, "preload", None)  # Chroma's vector cache
        if vectors is not None:
            timed("vectors", vectors)
        return timings

    # -- public API -------------------------------------------------------------------------------------------------
    def verify(self) -> dict[str, str]:
        """Open every configured component; raises a :class:`~knowrec.errors.KnowrecError` saying what is wrong."""
        report: dict[str, str] = {}
        verify = getattr(self.store, "verify", None)
        if verify:
            verify()
        s = self.settings
        report["graph"] = f"neo4j {s.graph_uri}" if s.graph_uri else f"sqlite {s.graph_path}"
        getattr(self.index, "verify", lambda: None)()
        report["index"] = f"chroma {s.chroma_url}" if s.chroma_url else f"chroma {s.chroma_path}"
        report["embedder"] = getattr(self.embedder, "name", "?")
        llm = self.llm
        if llm is not None:
            getattr(llm, "verify", lambda: None)()
            report["llm"] = llm.model_id
        return report

    def ingest(
        self,
        path: str | Path,
        format: Literal["movielens", "generic"] = "generic",
        *,
        kg_path: str | Path | None = None,
        max_users: int | None = None,
        progress: bool | None = None,
        fit: bool = True,
    ) -> IngestSummary:
        """Read a dataset folder and write it to the stores: validated, atomic, idempotent; then fit the models.

        Args:
            path: a folder in the generic format (``items.csv|jsonl``, ``interactions.csv``, ``facts.tsv``) or the
                MovieLens ml-latest-small layout.
            format: ``generic`` or ``movielens``.
            kg_path: MovieLens only: a DBpedia triples file (default: ``kg_triples.tsv.gz`` in the folder, if any).
            max_users: keep only this many users (smallest ids) — for quick trials.
            progress: show progress bars (default: ``settings.progress``).
            fit: run :meth:`fit` afterwards (when something new was ingested or nothing is fitted yet).

        Raises:
            InvalidInput: a row is malformed; names file and line. Nothing is written.
        """
        from knowrec.datasets import load_generic, load_movielens

        folder = Path(path)
        if not folder.exists():
            raise InvalidInput("no such file or folder", path=folder)
        if format == "movielens":
            ds = load_movielens(folder, kg_path=Path(kg_path) if kg_path else None, max_users=max_users)
        elif format == "generic":
            ds = load_generic(folder)
        else:
            raise ConfigError(f"unknown format {format!r}; use movielens or generic")
        return self.ingest_dataset(ds, progress=progress, fit=fit)

    def ingest_dataset(
        self,
        dataset: Any,
        *,
        progress: bool | None = None,
        fit: bool = True,
        reuse: Path | list[Path] | None = None,
    ) -> IngestSummary:
        """Write an already loaded :class:`~knowrec.datasets.Dataset` (see :meth:`ingest`), then :meth:`fit` (unless
        ``fit=False``, or nothing new was ingested and models exist)."""
        show = self.settings.progress if progress is None else progress
        self.settings.models_path.mkdir(parents=True, exist_ok=True)

        def bars(totals: dict[str, int]) -> Any:
            return rich_progress(show, totals)

        summary = ingest_dataset(dataset, self.store, self.index, progress=bars)
        self._pipeline = None
        if fit and (summary.new_interactions or not (self.settings.models_path / "manifest.json").is_file()):
            self.fit(progress=show, reuse=reuse)
        return summary

    def ingest_demo(self, max_users: int | None = None, progress: bool | None = None) -> IngestSummary:
        """Ingest the bundled MovieLens ml-latest-small + DBpedia demo data (see ``knowrec/datasets/demo``).

        Args:
            max_users: ingest only the first users and the items they rated (a quick, small demo).
        """
        from knowrec.datasets import demo_models_path, load_demo, subsample

        ds = load_demo()
        # the full demo's models ship in the package: fit() reuses them when the stored data is exactly the demo's
        shipped = demo_models_path() if max_users is None else None
        return self.ingest_dataset(
            ds if max_users is None else subsample(ds, max_users), progress=progress, reuse=shipped
        )

    def recommend(
        self,
        user_id: str | int | None,
        k: int = 10,
        query: str | None = None,
        diversity: float = 0.3,
        *,
        exclude: list[str] | None = None,
        candidates: list[str] | None = None,
        mode: Literal["verbalizer", "listwise", "pointwise", "none"] | None = None,
        on_retrieved: Callable[[Recommendation], None] | None = None,
    ) -> Recommendation:
        """Recommend ``k`` items for a user, each with reasons that cite KG facts.

        Unknown users (or ``None``) get the cold-start path: popularity, plus the query text if given.

        Args:
            user_id: the user's id (ints are turned into strings).
            k: how many items.
            query: optional free text ("a heist movie with a twist").
            diversity: 0 keeps the ranked order; towards 1 favours items unlike the ones already picked.
            exclude: item ids never to return.
            candidates: rank only these items (offline protocols with fixed candidate lists).
            mode: override the configured ranking mode for this call.
            on_retrieved: called with the top ``k`` in retrieval order (no reasons yet) as soon as the candidates
                are known, before the LLM ranks them; not called when nothing is left for an LLM to do.

        Example (needs a populated data dir; not run as a doctest)::

            r = rec.recommend("1", k=3)
            len(r.items), r.ranking_mode
            # → (3, 'verbalizer')
        """
        q = RecQuery(
            user_id=None if user_id is None else str(user_id),
            k=k,
            query=query,
            diversity=diversity,
            exclude=tuple(exclude or ()),
            candidates=tuple(candidates or ()),
        )
        if self.store.stats()["items"] == 0:
            raise NotFound("the store is empty: ingest data first (knowrec ingest … or knowrec demo)")
        return self.pipeline(mode).recommend(q, on_retrieved=on_retrieved)

    # -- chat -------------------------------------------------------------------------------------------------------
    @property
    def _chat_agent(self) -> ChatAgent:
        agent = self.__dict__.get("_chat")
        if agent is None:
            with self._build_lock:
                agent = self.__dict__.get("_chat") or self._build_chat_agent()
                self.__dict__["_chat"] = agent
        return agent

    def _build_chat_agent(self) -> ChatAgent:
        cfg = self.settings.chat
        sessions = SessionStore(cfg.sessions_file or self.settings.data_dir / "sessions.sqlite")
        return ChatAgent(
            self.store,
            self.recommend,
            sessions,
            cfg,
            llm=(lambda: self.llm) if cfg.extract_with_llm else (lambda: None),
            like_threshold=self.settings.retrieval.like_threshold,
        )

    def new_session(self, user_id: str | None = None) -> str:
        """Start a chat session; its user is ``user_id`` or ``"chat:<session id>"``. Returns the session id."""
        return self._chat_agent.new_session(user_id)

    def chat(
        self,
        session_id: str,
        message: str,
        *,
        user_id: str | None = None,
        k: int | None = None,
        on_progress: Callable[[ChatProgress], None] | None = None,
    ) -> ChatTurn:
        """Answer one chat message (the session is created if unknown) with ``k`` items (``chat.k`` by default, or
        the number the message asks for: "give me 3 comedies"); returns the assistant's turn.

        The agent asks one clarifying question when it knows nothing, looks up facts ("who directed Alien?"), or
        recommends ``k`` items through :meth:`recommend`, honouring what the session said (excluded genres or
        people, era, "more like X but lighter", likes and dislikes). Sessions persist in ``sessions.sqlite``.
        ``on_progress`` hears each stage as it starts (:class:`~knowrec.types.ChatProgress`): the LLM reading the
        request, retrieval, and the picks in retrieval order with the answer's first line while the LLM ranks them.

        Example (needs a populated data dir; not run as a doctest)::

            sid = rec.new_session()
            turn = rec.chat(sid, "more like Toy Story, but no comedies")
            turn.action, len(turn.items)
            # → ('recommend', 5)
        """
        return self._chat_agent.chat(session_id, message, user_id=user_id, k=k, on_progress=on_progress)

    def chat_history(self, session_id: str) -> list[ChatTurn]:
        """Every turn of a session, oldest first. Raises :class:`~knowrec.errors.NotFound` for an unknown session."""
        return self._chat_agent.history(session_id)

    def feedback(self, item_id: str, liked: bool, *, session_id: str | None = None, user_id: str | None = None) -> None:
        """Record that a user liked or disliked an item: a stored interaction (rating 5 or 1) and, with a session,
        its profile (a disliked item never comes back in that session).

        Raises:
            NotFound: unknown item (or unknown session).
            InvalidInput: neither ``session_id`` nor ``user_id`` given.
        """
        self._chat_agent.feedback(str(item_id), liked, session_id=session_id, user_id=user_id)

    def similar(self, item_id: str | int, k: int = 10) -> list[tuple[Item, float]]:
        """Items most similar to ``item_id`` by embedding, as ``(item, cosine)``.

        Raises:
            NotFound: the item is not stored.
        """
        item_id = str(item_id)
        vecs = self.index.vectors([item_id])
        if item_id not in vecs:
            raise NotFound(f"unknown item id {item_id!r}")
        hits = self.index.query(vecs[item_id], k, exclude={item_id})
        items = self.store.items([i for i, _ in hits])
        return [(items[i], s) for i, s in hits if i in items]

    def search(self, query: str, k: int = 10) -> list[tuple[Item, float]]:
        """Items whose text best matches ``query`` by embedding, as ``(item, cosine)``.

        Raises:
            InvalidInput: an empty query.
        """
        if not query or not query.strip():
            raise InvalidInput("the query is empty", field="query")
        vec = self.embedder.embed([query.strip()])[0]
        hits = self.index.query(vec, k)
        items = self.store.items([i for i, _ in hits])
        return [(items[i], s) for i, s in hits if i in items]

    def item(self, item_id: str | int, *, facts: int = 50) -> ItemDetails:
        """One item and up to ``facts`` of its knowledge-graph facts, most informative first.

        Raises:
            NotFound: the item is not stored.
        """
        item_id = str(item_id)
        found = self.store.items([item_id])
        if item_id not in found:
            raise NotFound(f"unknown item id {item_id!r}")
        stored = self.store.facts([item_id], n=facts)[item_id] if facts > 0 else []
        return ItemDetails(item=found[item_id], facts=tuple(stored))

    def session_profile(self, session_id: str) -> SessionProfile:
        """What a chat session has learnt so far, and the same in words. Raises ``NotFound`` for an unknown
        session."""
        from knowrec.agent.chat import profile_summary

        info = self._chat_agent.sessions.get(session_id)
        if info is None:
            raise NotFound(f"unknown session {session_id!r}")
        prof = info.profile
        summary = profile_summary(prof, self.store) if prof and not prof.is_empty() else "nothing yet"
        return SessionProfile(session_id=session_id, profile=prof, summary=summary)

    def stats(self) -> dict[str, int]:
        """Stored counts: items, facts, entities, users, interactions."""
        return self.store.stats()

    def info(self) -> dict[str, Any]:
        """Store counts and the effective settings."""
        return {
            "stats": self.store.stats(),
            "index_count": self.index.count(),
            # exact or hnsw (approximate) for Chroma (retrieval.exact_search_items); None for another index
            "vector_search": kind() if (kind := getattr(self.index, "search_kind", None)) else None,
            "models": self.models_info(),
            "settings": self.settings.describe(),
        }

    def models_info(self) -> dict[str, Any]:
        """What is fitted, when, on how much data, and whether the store has changed since (``stale``)."""
        m = self.models.manifest
        if not m:
            return {"fitted": False, "fusion": "rrf", "hint": "run `knowrec fit`"}
        stats = self.store.stats()
        seq = m.get("sequential", {})
        fus = m.get("fusion", {})
        return {
            "fitted": True,
            "fitted_at": m.get("fitted_at"),
            "data_fingerprint": m.get("data_fingerprint"),
            "stale": stats["interactions"] != m.get("interactions") or stats["items"] != m.get("items"),
            "interactions": m.get("interactions"),
            "items": m.get("items"),
            "sequential": {
                "best_epoch": seq.get("best_epoch"),
                "heldout_ndcg@10": seq.get("heldout_ndcg@10"),
                "served": seq.get("served"),
            },
            "fusion": "learned" if self.models.fusion is not None else "rrf",
            "cold_start_fusion": "learned" if self.models.cold_fusion is not None else "as above",
            "constrained_cold_start_fusion": "learned" if self.models.constrained_fusion is not None else "as above",
            "fusion_valid": {k: v for k, v in fus.items() if k.startswith("valid_") or k == "skipped"},
            "seed": m.get("config", {}).get("seed"),
        }

    def close(self) -> None:
        """Release the stores, the chat sessions file and an HTTP LLM client built here. Safe to call twice."""
        if "_chat" in self.__dict__:
            self._chat_agent.sessions.close()
        if self._store is not None:
            self._store.close()
        close_llm = getattr(self._llm, "close", None)
        if self._owns_llm and close_llm is not None:
            close_llm()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _extract_bar(enabled: bool, total: int) -> Iterator[Callable[[Any, ExtractSummary], None] | None]:
    """A progress bar for ``kg extract`` showing facts kept and dropped so far (``None`` when disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("kg extract"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task("extract", total=total or None, note="")

        def tick(_answer: Any, s: ExtractSummary) -> None:
            note = f"kept {s.kept} · dropped {sum(s.dropped.values())} · failed {sum(s.failed.values())}"
            bar.update(task, advance=1, note=note)

        yield tick
