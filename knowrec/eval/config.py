"""The evaluation run configuration (a TOML file), validated."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from knowrec.errors import InvalidInput

__all__ = ["PIPELINE_SYSTEMS", "EvalConfig", "load_config"]

PIPELINE_SYSTEMS: dict[str, dict[str, Any]] = {
    # name: settings overrides ("settings") and recommend() arguments ("call"); "llm": whether it calls the LLM;
    # "models": fit its own models (fusion) into <store>/models-NAME, reusing the main fit's sequential model
    "knowrec": {"settings": {}, "call": {}, "llm": True},
    "knowrec-full-prompt": {"settings": {"ranker": {"prompt_tokens": None}}, "call": {}, "llm": True},
    "knowrec-listwise": {"settings": {}, "call": {"mode": "listwise"}, "llm": True},
    "knowrec-pointwise": {"settings": {}, "call": {"mode": "pointwise"}, "llm": True},
    "retrieval-only": {"settings": {}, "call": {"mode": "none", "diversity": 0.0}, "llm": False},
    "no-llm": {"settings": {}, "call": {"mode": "none"}, "llm": False},
    "no-kg": {
        "settings": {
            "retrieval": {"generators": ["sequential", "collaborative", "vector", "popularity"]},
            "ranker": {"facts_per_candidate": 0},
        },
        "call": {},
        "llm": True,
        "models": "no-kg",
    },
    # retrieval ablations (no LLM, all users): each refits the fusion without one source ("models": its own folder)
    "no-llm-rrf": {"settings": {"retrieval": {"fusion": "rrf"}}, "call": {"mode": "none"}, "llm": False},
    "fusion-no-kg": {
        "settings": {"retrieval": {"generators": ["sequential", "collaborative", "vector", "popularity"]}},
        "call": {"mode": "none"},
        "llm": False,
        "models": "no-kg",
    },
    "fusion-no-text": {
        "settings": {"retrieval": {"generators": ["sequential", "collaborative", "kg", "popularity"]}},
        "call": {"mode": "none"},
        "llm": False,
        "models": "no-text",
    },
    "fusion-no-sequential": {
        "settings": {"retrieval": {"generators": ["collaborative", "kg", "vector", "popularity"]}},
        "call": {"mode": "none"},
        "llm": False,
        "models": "no-sequential",
    },
    "no-diversity": {"settings": {}, "call": {"diversity": 0.0}, "llm": True},
    # LoRA-tuned rankers ("tune": overrides of settings.tune on top of [systems] tune): tuned in the validation store
    # (training interactions only) into <out>/adapters/NAME, shared by systems that name the same adapter;
    # "ablation": runs on [systems] ablation_users
    "knowrec-tuned": {"settings": {}, "call": {}, "llm": True, "tune": {}, "adapter": "main"},
    "tuned-no-facts": {
        "settings": {"ranker": {"facts_per_candidate": 0}},
        "call": {},
        "llm": True,
        "tune": {},
        "adapter": "main",
        "ablation": True,
    },
    "tuned-no-kg-objective": {
        "settings": {},
        "call": {},
        "llm": True,
        "tune": {"objectives": ["ranking"]},
        "adapter": "no-kg-objective",
        "ablation": True,
    },
    # tuned on out-of-sample lists: the targets are the items the fit's probe stage held out, their candidates
    # retrieved by the probe models (tune.candidates = "held-out"), so the lists are as hard as in serving
    "knowrec-tuned-held-out": {
        "settings": {},
        "call": {},
        "llm": True,
        "tune": {"candidates": "held-out"},
        "adapter": "held-out",
    },
    # tuned and served with the candidates shown in a seeded random order ("tune_settings": the settings its tuning
    # runs with), so that the adapter cannot learn the labels' positions
    "tuned-shuffled": {
        "settings": {"ranker": {"shuffle": True}},
        "call": {},
        "llm": True,
        "tune": {},
        "tune_settings": {"ranker": {"shuffle": True}},
        "adapter": "shuffled",
    },
}
"""Our pipeline and its ablations. ``knowrec`` = verbalizer ranking (the default mode) with diversity."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(_Strict):
    name: str = "run"
    out: Path = Path("runs/run")
    seed: int = 0
    users: int | Literal["all"] = "all"
    """Users for systems without an LLM (sampled with ``seed`` if an int)."""
    llm_users: int | Literal["all"] = 100
    """Users for systems that call the LLM (a fixed-seed subset of ``users``)."""
    reuse_stores: Path | None = None
    """Another run's ``stores`` folder (relative to the config file): its fitted models are reused where their
    fingerprints match this run's data (e.g. the sequential model of a run on the same interactions with other facts;
    a fusion is reused only where the facts it saw are the same)."""
    llm_concurrency: int = Field(default=1, ge=1, le=64)
    """Users ranked concurrently by LLM systems (the in-process model serialises; HTTP clients overlap)."""


class DatasetSection(_Strict):
    source: Literal["demo", "movielens", "generic"] = "demo"
    path: Path | None = None
    kg_path: Path | None = None
    extracted_facts: Path | None = None
    """A ``results.jsonl`` of ``knowrec kg extract``: its facts (source ``llm``) join the dataset's."""
    min_uc: int = 5
    min_sc: int = 5


class ProtocolSection(_Strict):
    names: list[Literal["p1", "p2", "p3", "p4"]] = ["p1", "p2", "p3"]
    p1_negatives: int = 19
    ks: list[int] = [1, 5, 10]
    list_len: int = 20
    """Length of the recommended list kept per user (P2) — metrics go up to this cutoff."""
    p3_cutoffs: list[int] = [20, 50, 100]
    p4_turns: int = Field(default=5, ge=1, le=20)
    """P4: messages per simulated dialogue (it ends earlier when the target is shown)."""
    p4_k: int = Field(default=5, ge=1, le=50)
    """P4: items per answer."""
    p4_users: int | Literal["all"] = 100
    """P4: simulated users (a fixed-seed sample of the evaluated users, drawn with seed + 4)."""
    p4_llm_users: int | Literal["all"] = "all"
    """P4: the systems that call an LLM (``knowrec``) play this many of the P4 users (drawn with seed + 5); the
    report adds every system's numbers on those users."""
    p4_more_rate: float = Field(default=0.25, ge=0.0, le=1.0)
    """P4: how often a message after the first only asks for more."""


class SystemsSection(_Strict):
    baselines: list[Literal["random", "mostpop", "itemknn", "ease", "bprmf", "sasrec"]] = [
        "random",
        "mostpop",
        "itemknn",
        "ease",
        "bprmf",
        "sasrec",
    ]
    pipeline: list[str] = ["knowrec", "retrieval-only", "no-llm", "no-kg", "no-diversity", "knowrec-listwise"]
    llm_weights: list[float] = [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    """Fusion weights tried on the validation item for LLM systems."""
    llm_weight_rule: Literal["paired", "max"] = "paired"
    """How the LLM weight is chosen from the validation grid. ``paired``: the weight with the best NDCG@10 (ties go
    to the smaller weight) only if it beats weight 0 in a paired t-test over the validation users at
    ``llm_weight_alpha`` divided by the number of non-zero weights tried (Bonferroni), else 0 — the LLM has to earn
    its place, since a weight that merely ties on validation can lose on the test item. ``max``: the grid's maximum,
    ties towards 0.3 (the rule of runs before 2026-12-07)."""
    llm_weight_alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    """The family-wise significance level of the ``paired`` rule."""
    tune: dict[str, Any] = {}
    """``settings.tune`` overrides for the tuned systems (``examples``, ``threads``, …)."""
    conversational: list[Literal["knowrec", "no-llm", "constrained-pop"]] = ["knowrec", "no-llm", "constrained-pop"]
    """P4's systems: the chat agent over the whole pipeline, the same without the LLM, and popularity filtered by the
    constraints the simulated user revealed."""
    tuned_users: int | Literal["all"] = "all"
    """The tuned systems run on this many of the LLM users (drawn with seed + 2; their LLM weight is chosen on the
    same users' validation items); the report names the count."""
    ablation_users: int | Literal["all"] = "all"
    """The tuned ablations (``tuned-no-facts``, ``tuned-no-kg-objective``) run on this many of them (the same draw,
    so a smaller count is a subset of a larger one)."""


class EvalConfig(_Strict):
    """A whole evaluation run. See ``bench/eval-ml-latest-small.toml`` for an example."""

    run: RunSection = RunSection()
    dataset: DatasetSection = DatasetSection()
    protocols: ProtocolSection = ProtocolSection()
    systems: SystemsSection = SystemsSection()

    def model_post_init(self, __context: object) -> None:
        unknown = [s for s in self.systems.pipeline if s not in PIPELINE_SYSTEMS]
        if unknown:
            raise ValueError(f"unknown pipeline systems {unknown}; known: {sorted(PIPELINE_SYSTEMS)}")


def load_config(path: Path) -> EvalConfig:
    """Read and validate a run config; errors name the file and the field."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput("no such config file", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"not valid TOML: {exc}", path=path) from None
    try:
        cfg = EvalConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInput(str(first.get("msg")), path=path, field=field or None) from None
    if cfg.dataset.source != "demo" and cfg.dataset.path is None:
        raise InvalidInput("dataset.path is required unless source = 'demo'", path=path, field="dataset.path")
    if not cfg.run.out.is_absolute():
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": Path(path).parent / cfg.run.out})})
    if cfg.run.reuse_stores is not None and not cfg.run.reuse_stores.is_absolute():
        cfg = cfg.model_copy(
            update={"run": cfg.run.model_copy(update={"reuse_stores": Path(path).parent / cfg.run.reuse_stores})}
        )
    extracted = cfg.dataset.extracted_facts
    if extracted is not None and not extracted.is_absolute():
        dataset = cfg.dataset.model_copy(update={"extracted_facts": Path(path).parent / extracted})
        cfg = cfg.model_copy(update={"dataset": dataset})
    return cfg
