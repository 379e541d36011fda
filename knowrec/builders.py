"""Settings → clients: the one module that builds stores, the embedder, the item index, LLM clients and rankers.

Everything here is a plain function of :class:`~knowrec.config.Settings` (and of clients already built), so a
caller that wants one piece — a script that only needs the graph store, a test that injects a fake LLM — builds just
that piece the same way the :class:`~knowrec.Recommender` does. Each client class keeps its own ``from_config``
where it has options of its own (:meth:`knowrec.agent.llm.http.OpenAIHTTPClient.from_config`).

Example:
    >>> from knowrec.config import Settings
    >>> from knowrec.builders import build_llm
    >>> llm, owned = build_llm(Settings(llm={"backend": "http", "model": "m", "adapter": "movies"}))
    >>> llm.model_id, owned
    ('m + lora:movies', True)
    >>> build_llm(Settings(llm={"backend": "none"}))
    (None, False)
"""

from __future__ import annotations

from pathlib import Path

from knowrec.agent.llm.base import LLMClient
from knowrec.agent.llm.torch_engine import generation_engine, scoring_engine
from knowrec.agent.rank import ListwiseRanker, PointwiseRanker, Ranker, RetrievalRanker, VerbalizerRanker
from knowrec.config import Settings, default_cache_dir
from knowrec.errors import ConfigError
from knowrec.kg_store.base import Embedder, GraphStore, ItemIndex

__all__ = ["build_embedder", "build_index", "build_llm", "build_ranker", "build_store"]


def build_store(settings: Settings) -> GraphStore:
    """The graph store: Neo4j when ``graph_uri`` is set, else SQLite in the data dir."""
    s = settings
    if s.graph_uri:
        from knowrec.kg_store.neo4j import Neo4jGraphStore

        password = s.graph_password.get_secret_value() if s.graph_password else None
        return Neo4jGraphStore(
            s.graph_uri,
            user=s.graph_user,
            password=password,
            database=s.graph_database,
            fact_sources=s.retrieval.fact_sources,
        )
    from knowrec.kg_store.sqlite import SQLiteGraphStore

    s.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteGraphStore(s.graph_path, fact_sources=s.retrieval.fact_sources)


def build_embedder(settings: Settings) -> Embedder:
    """The sentence embedder (``embedder_model``, or the bundled all-MiniLM-L6-v2). The bundled model reads the demo's
    item documents from the vectors shipped with it (after checking it is the model that made them); another model
    is not given them, so its folder is never hashed for nothing."""
    from knowrec.datasets import demo_embeddings_path
    from knowrec.kg_store.embedder import SentenceTransformerEmbedder, bundled_embedder_path

    if settings.embedder_model is not None:
        return SentenceTransformerEmbedder(settings.embedder_model, batch_size=settings.embed_batch_size)
    shipped = [demo_embeddings_path()] if demo_embeddings_path().is_file() else []
    return SentenceTransformerEmbedder(
        bundled_embedder_path(), batch_size=settings.embed_batch_size, precomputed=shipped
    )


def build_index(settings: Settings, embedder: Embedder) -> ItemIndex:
    """The item index: a Chroma server when ``chroma_url`` is set, else Chroma on disk in the data dir (exact search
    up to ``retrieval.exact_search_items`` items)."""
    from knowrec.kg_store.chroma_index import ChromaItemIndex

    s = settings
    if s.chroma_url:
        token = s.chroma_token.get_secret_value() if s.chroma_token else None
        return ChromaItemIndex(embedder, url=s.chroma_url, token=token)
    return ChromaItemIndex(embedder, path=s.chroma_path, exact_max_items=s.retrieval.exact_search_items)


def build_llm(settings: Settings) -> tuple[LLMClient | None, bool]:
    """The LLM client of ``llm.backend`` and whether the caller owns it (must close it): ``(None, False)`` for
    ``none``; the in-process model for ``llama_cpp``; an HTTP client for ``http``."""
    cfg = settings.llm
    if cfg.backend == "llama_cpp":
        return _local_llm(settings), False
    if cfg.backend == "http":
        from knowrec.agent.llm.http import OpenAIHTTPClient

        return OpenAIHTTPClient.from_config(cfg), True
    return None, False


def _local_llm(settings: Settings) -> LLMClient:
    """The in-process model on the engine measured fastest per call kind (``llm.scoring_engine``,
    ``llm.generation_engine``): one client when both are the same engine, else a ``RoutedClient``."""
    from knowrec.agent.llm.llama_cpp import bundled_llm_path

    cfg = settings.llm
    path = cfg.model_path or bundled_llm_path()
    engines = {
        "scoring": scoring_engine(cfg.scoring_engine),
        "generation": generation_engine(cfg.generation_engine),
    }
    peft_dir: Path | None = None
    gguf_lora: Path | None = None
    if cfg.adapter:
        from knowrec.tuning import adapter_paths

        peft_dir, gguf_lora = adapter_paths(cfg.adapter)
        # an adapter in one format only: the engine that reads it answers every call kind
        if peft_dir is None:
            engines = dict.fromkeys(engines, "llama_cpp")
        elif gguf_lora is None:
            engines = dict.fromkeys(engines, "torch")
    made: dict[str, LLMClient] = {}
    if "torch" in engines.values():
        from knowrec.agent.llm.torch_engine import TorchClient

        made["torch"] = TorchClient(
            path,
            n_threads=cfg.n_threads,
            name=path.stem,
            prefix_cache=cfg.prefix_cache,
            cache_dir=cfg.cache_dir or default_cache_dir() / "llm",
            adapter=peft_dir,
        )
    if "llama_cpp" in engines.values():
        from knowrec.agent.llm.llama_cpp import LlamaCppClient

        made["llama_cpp"] = LlamaCppClient(
            path, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, seed=cfg.seed, lora_path=gguf_lora
        )
    if len(made) == 1:
        return next(iter(made.values()))
    from knowrec.agent.llm.torch_engine import RoutedClient

    return RoutedClient(made[engines["scoring"]], made[engines["generation"]])


def build_ranker(settings: Settings, mode: str, llm: LLMClient | None) -> Ranker:
    """The ranker of ``mode``: retrieval order for ``none``, else an LLM ranker over ``llm``."""
    if mode == "none":
        return RetrievalRanker()
    if llm is None:
        raise ConfigError(f"ranker mode {mode!r} needs an LLM, but llm.backend is 'none'")
    w = settings.ranker.llm_weight
    if mode == "verbalizer":
        return VerbalizerRanker(
            llm, llm_weight=w, prompt_tokens=settings.ranker.prompt_tokens, shuffle=settings.ranker.shuffle
        )
    if mode == "listwise":
        return ListwiseRanker(llm, llm_weight=w, prompt_tokens=settings.ranker.prompt_tokens)
    if mode == "pointwise":
        return PointwiseRanker(llm, llm_weight=w)
    raise ConfigError(f"unknown ranker mode {mode!r}; use verbalizer, listwise, pointwise or none")
