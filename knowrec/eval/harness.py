"""The evaluation runner: ``knowrec eval run CONFIG.toml``.

For each protocol and system it writes one JSON line per user into ``OUT/cache/`` as soon as that user is done, so
an interrupted run resumes where it stopped; ``results.json`` and ``report.md`` (with PNG plots) are rebuilt from the
cache at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from knowrec.agent.fusion import build_candidate_list, rrf_order
from knowrec.agent.rank import fuse_scores
from knowrec.config import FitConfig, Settings
from knowrec.datasets import Dataset, load_demo, load_generic, load_movielens
from knowrec.eval.config import PIPELINE_SYSTEMS, EvalConfig
from knowrec.eval.data import Split, leave_one_out, preprocess
from knowrec.eval.metrics import (
    accuracy_metrics,
    intra_list_diversity,
    mean,
    pessimistic_rank,
    rank_in_list,
)
from knowrec.recommender import Recommender
from knowrec.types import Interaction, RecQuery

if TYPE_CHECKING:
    from knowrec.eval.conversation import Catalogue

__all__ = ["Harness", "UserCache", "choose_llm_weight", "llm_weight_scores", "p1_candidates", "sample_users"]

log = logging.getLogger(__name__)

# What the stores' order of equal timestamps is (part of their fingerprint): since graph store schema v3 they keep
# the order they were written in, which is the split's (time, then item id numerically), as the harness writes them.
STORE_ORDER = "interaction ties: write order"

ProgressFactory = Callable[[str, int], Callable[[int], None]]
"""``progress(description, total)`` returns ``advance(n)``."""


def _noop_progress(desc: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def llm_weight_scores(
    records: dict[str, dict[str, Any]], targets: dict[str, str], weights: Sequence[float]
) -> dict[float, dict[str, float]]:
    """Per-user NDCG@10 of the validation item at each LLM weight, from the cached validation lists (``records``:
    user → its ``retrieval`` order and the ``llm`` score of each item).

    Example:
        >>> rows = {"1": {"retrieval": ["a", "b"], "llm": {"a": 0.1, "b": 0.9}}}
        >>> llm_weight_scores(rows, {"1": "b"}, [0.0, 1.0])
        {0.0: {'1': 0.6309297535714575}, 1.0: {'1': 1.0}}
    """
    out: dict[float, dict[str, float]] = {}
    for w in weights:
        scores: dict[str, float] = {}
        for user, row in records.items():
            retr = row["retrieval"]
            llm_order = sorted(retr, key=lambda i: -(row["llm"].get(i) or 0.0))
            fused = fuse_scores(retr, llm_order, w)
            order = sorted(retr, key=lambda i: -fused[i])
            scores[user] = accuracy_metrics(rank_in_list(order, targets[user]), (10,))["NDCG@10"]
        out[w] = scores
    return out


def choose_llm_weight(
    per_weight: dict[float, dict[str, float]], rule: str = "paired", alpha: float = 0.05
) -> dict[str, Any]:
    """Choose the LLM fusion weight from per-user validation NDCG@10 at each weight tried (see
    ``systems.llm_weight_rule``). Returns ``llm_weight``, the ``grid`` (mean NDCG@10 per weight), the grid's
    ``best`` weight and, under ``paired``, the ``test`` of best against weight 0 with its ``threshold``.

    Example:
        >>> flat = {0.0: {"1": 0.5, "2": 0.0}, 0.5: {"1": 0.5, "2": 0.1}}
        >>> choose_llm_weight(flat)["llm_weight"]  # better on two users is no evidence
        0.0
        >>> choose_llm_weight(flat, "max")["llm_weight"]
        0.5
    """
    from knowrec.eval.report import paired_test

    grid = [{"llm_weight": w, "NDCG@10": mean(list(s.values()))} for w, s in per_weight.items()]
    if rule == "max":
        best = max(grid, key=lambda r: (r["NDCG@10"], -abs(r["llm_weight"] - 0.3)))["llm_weight"]
        return {"llm_weight": best, "grid": grid, "best": best}
    best = max(grid, key=lambda r: (r["NDCG@10"], -r["llm_weight"]))["llm_weight"]
    if best == 0.0 or 0.0 not in per_weight:
        return {"llm_weight": best, "grid": grid, "best": best}
    threshold = alpha / max(sum(1 for w in per_weight if w != 0.0), 1)
    test = paired_test(per_weight[best], per_weight[0.0])
    earned = test["mean_diff"] > 0 and test["p_t"] < threshold
    return {"llm_weight": best if earned else 0.0, "grid": grid, "best": best, "test": test, "threshold": threshold}


class UserCache:
    """Per-user results of one (system, protocol, phase), appended as JSON lines; safe to resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}
        if path.exists():
            broken = 0
            good: list[str] = []
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interrupt: that user is computed again
                    broken += 1
                    continue
                good.append(line)
                self.records[rec["user"]] = rec
            if broken:
                log.warning("%s: dropped %d incomplete line(s); those users will be recomputed", path, broken)
                path.write_text("".join(g + "\n" for g in good), encoding="utf-8")

    def done(self, user: str) -> bool:
        return user in self.records

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
            self.records[record["user"]] = record


def sample_users(users: Sequence[str], n: int | str, seed: int) -> list[str]:
    """All users, or ``n`` of them drawn with ``seed`` (returned in id order).

    Example:
        >>> sample_users(["1", "2", "3"], "all", 0)
        ['1', '2', '3']
    """
    if n == "all" or int(n) >= len(users):
        return list(users)
    picked = set(random.Random(seed).sample(list(users), int(n)))
    return [u for u in users if u in picked]


def p1_candidates(split: Split, phase: str, negatives: int, seed: int) -> dict[str, list[str]]:
    """P1 lists: the phase's target plus ``negatives`` items the user never rated, shuffled with ``seed``."""
    out: dict[str, list[str]] = {}
    for user in split.users:
        rng = random.Random(f"{seed}:{phase}:{user}")
        rated = {*split.train[user], split.val[user], split.test[user]}
        pool = [i for i in split.items if i not in rated]
        cands = [*rng.sample(pool, negatives), split.target(user, phase)]
        rng.shuffle(cands)
        out[user] = cands
    return out


@dataclass
class _Context:
    cfg: EvalConfig
    dataset: Dataset
    sequences: dict[str, list[Interaction]]
    split: Split
    users: list[str]
    llm_users: list[str]
    p1: dict[str, dict[str, list[str]]]


class Harness:
    """Runs a whole :class:`EvalConfig`. See the module docstring."""

    def __init__(self, cfg: EvalConfig, progress: ProgressFactory | None = None) -> None:
        self.cfg = cfg
        self.out = cfg.run.out
        self.progress = progress or _noop_progress
        self._llms: dict[str | None, Any] = {}
        self._embedder: Any = None
        self._vectors: dict[str, np.ndarray] | None = None
        self._entities: dict[str, set[str]] | None = None
        self._cat: Catalogue | None = None

    # -- data ----------------------------------------------------------------------------------------------------------
    def load(self) -> _Context:
        d = self.cfg.dataset
        if d.source == "demo":
            ds = load_demo()
        elif d.source == "movielens":
            assert d.path is not None
            ds = load_movielens(d.path, kg_path=d.kg_path)
        else:
            assert d.path is not None
            ds = load_generic(d.path)
        if d.extracted_facts is not None:
            from knowrec.extraction.extract import load_results

            titles = {it.id: it.title for it in ds.items}
            known = {f.id for f in ds.facts}
            extra = [f for f in load_results(d.extracted_facts, titles) if f.head in titles and f.id not in known]
            ds.facts.extend(extra)
            ds.fact_origins.extend([(str(d.extracted_facts), 0)] * len(extra) if ds.fact_origins else [])
        sequences = preprocess(ds.interactions, min_uc=d.min_uc, min_sc=d.min_sc)
        split = leave_one_out(sequences)
        sequences = {u: s for u, s in sequences.items() if u in split.train}
        users = sample_users(split.users, self.cfg.run.users, self.cfg.run.seed)
        llm_users = sample_users(users, self.cfg.run.llm_users, self.cfg.run.seed + 1)
        p1: dict[str, dict[str, list[str]]] = {}
        if "p1" in self.cfg.protocols.names:
            for phase in ("val", "test"):
                path = self.out / f"p1-candidates-{phase}.json"
                if path.exists():
                    p1[phase] = json.loads(path.read_text())
                else:
                    p1[phase] = p1_candidates(split, phase, self.cfg.protocols.p1_negatives, self.cfg.run.seed)
                    self.out.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(p1[phase], indent=0, sort_keys=True) + "\n")
        return _Context(self.cfg, ds, sequences, split, users, llm_users, p1)

    def _fingerprint(self, ctx: _Context) -> str:
        h = hashlib.sha1()
        h.update(json.dumps(ctx.split.stats(), sort_keys=True).encode())
        d = self.cfg.dataset
        # without extracted facts the fingerprint is the one runs had before that option existed (their stores stay)
        dump = d.model_dump(mode="json", exclude={"extracted_facts"} if d.extracted_facts is None else set())
        if d.extracted_facts is not None:
            dump["extracted_facts"] = hashlib.sha1(Path(d.extracted_facts).read_bytes()).hexdigest()[:12]
        h.update(json.dumps(dump, sort_keys=True).encode())
        # stores whose equal timestamps tie by write order (the split's order), not by item id: those built before
        # are rebuilt, and the lists made over them retired (_retire_stale_lists)
        h.update(STORE_ORDER.encode())
        return h.hexdigest()[:12]

    def recommender(
        self,
        ctx: _Context,
        phase: str,
        overrides: dict[str, Any] | None = None,
        models: str | None = None,
        fitted: bool = True,
    ) -> Recommender:
        """A pipeline over a store holding only what ``phase`` may see (the catalogue and its training history).

        With ``fitted`` (default) its models are fitted first if they are not yet: like the baselines, on the training
        split in the validation phase (its held-out items are the last training items); in the test phase on train +
        validation item, whose validation item is never a label (``fit(protect=…)``), reusing the validation phase's
        fusion and epoch count (the same prefixes). With ``models``, they go to ``<store>/models-NAME`` (an ablation's
        fusion, reusing the phase's main sequential model). ``fitted=False`` is for reading the stores only."""
        store_dir = self.out / "stores" / phase
        marker = store_dir / "READY"
        fp = self._fingerprint(ctx)
        if not (marker.exists() and marker.read_text() == fp):
            other = self.out / "stores" / ("val" if phase == "test" else "test")
            if store_dir.exists():
                shutil.rmtree(store_dir)
            if (other / "READY").exists() and (other / "READY").read_text() == fp:
                shutil.copytree(other, store_dir)  # same items: reuse the embedded index, re-ingest interactions
                for copied in store_dir.glob("models*"):  # fitted on the other phase's data
                    shutil.rmtree(copied)
            rec = self._make(Settings(data_dir=store_dir, progress=True))
            catalogue = set(ctx.split.items)
            keep = 1 if phase == "test" else 2
            interactions = [x for seq in ctx.sequences.values() for x in seq[: len(seq) - keep]]
            ds = Dataset(
                name=f"{ctx.dataset.name}:{phase}",
                items=[it for it in ctx.dataset.items if it.id in catalogue],
                facts=[f for f in ctx.dataset.facts if f.head in catalogue],
                interactions=interactions,
            )
            if (store_dir / "graph.sqlite").exists():
                # the copied store holds the other phase's interactions: start the graph afresh, keep the index
                (store_dir / "graph.sqlite").unlink()
                for extra in store_dir.glob("graph.sqlite-*"):
                    extra.unlink()
            rec.ingest_dataset(ds, fit=False)
            rec.close()
            marker.write_text(fp)
        settings: dict[str, Any] = {"data_dir": store_dir, "progress": False, "fit": self._fit_config(phase)}
        for key, val in (overrides or {}).items():
            settings[key] = val
        if not fitted:
            return self._make(Settings(**settings))
        val_dir = self.out / "stores" / "val"
        if models is None:
            reuse = [val_dir / "models"] if phase == "test" else []
            if self.cfg.run.reuse_stores is not None:
                reuse.append(self.cfg.run.reuse_stores / phase / "models")
        else:
            settings["models_dir"] = store_dir / f"models-{models}"
            reuse = [store_dir / "models", val_dir / f"models-{models}"]
        rec = self._make(Settings(**settings))
        if not (rec.settings.models_path / "manifest.json").is_file():
            # the validation items by id: the store orders equal timestamps by item id, the split by the file, so a
            # validation item is not always the last stored item (41 of 610 ml-latest-small users)
            protect = (
                {u: {seq[-2].item_id} for u, seq in ctx.sequences.items() if len(seq) >= 2} if phase == "test" else None
            )
            rec.fit(progress=True, reuse=[r for r in reuse if r != rec.settings.models_path], protect=protect)
        return rec

    @staticmethod
    def _fit_config(phase: str) -> FitConfig:
        """Validation phase: fitted on train (held-out = last training item). Test phase: on train + validation item,
        which is never a label (``fit(protect=…)``), the sequential model refitted with the chosen epoch count."""
        return FitConfig(refit=phase == "test", threads=1)

    def _make(self, settings: Settings) -> Recommender:
        """A Recommender sharing one embedder and one LLM client (and so its prompt cache) across systems."""
        # one client per adapter (None: the base model)
        adapter = settings.llm.adapter
        rec = Recommender(settings, embedder=self._embedder, llm=self._llms.get(adapter))
        self._embedder = rec.embedder
        if adapter not in self._llms and settings.llm.backend != "none":
            self._llms[adapter] = rec.llm
        return rec

    def _beyond(self, ctx: _Context, lst: Sequence[str]) -> dict[str, float]:
        """Intra-list diversity and genre/entity coverage of one list (vectors and entities of the test store)."""
        if self._vectors is None or self._entities is None:
            rec = self.recommender(ctx, "test", fitted=False)
            self._vectors = rec.index.vectors(ctx.split.items)
            self._entities = rec.store.item_entities(ctx.split.items)
            rec.close()
        top = list(lst)[:10]
        ents = [self._entities.get(i, set()) for i in top]
        return {
            "ILD@10": intra_list_diversity([self._vectors[i] for i in top if i in self._vectors]),
            "genres@10": float(len({e for s in ents for e in s if e.startswith("genre:")})),
            "entities@10": float(len({e for s in ents for e in s})),
        }

    # -- baselines -----------------------------------------------------------------------------------------------------
    def run_baseline(self, ctx: _Context, name: str) -> dict[str, Any]:
        from knowrec.eval.baselines import BASELINES, tune

        cls = BASELINES[name]
        meta_path = self.out / "cache" / name / "meta.json"
        meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        caches: dict[str, UserCache] = {
            p: UserCache(self.out / "cache" / name / f"{p}.jsonl") for p in self.cfg.protocols.names if p != "p4"
        }
        pending: dict[str, list[str]] = {p: [u for u in ctx.users if not caches[p].done(u)] for p in caches}
        if not any(pending.values()):
            return meta
        if "params" not in meta:
            t = time.perf_counter()
            best, table = tune(cls, ctx.split, users=ctx.users)
            meta = {"params": best, "grid": table, "tune_s": round(time.perf_counter() - t, 1)}
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            meta_path.write_text(json.dumps(meta, indent=1, default=str))
        scorer = cls(**meta["params"])
        t = time.perf_counter()
        scorer.fit(ctx.split.sequences("test"), ctx.split.items)
        meta["fit_s"] = round(time.perf_counter() - t, 1)
        meta_path.write_text(json.dumps(meta, indent=1, default=str))
        index = scorer.index
        n_items = len(ctx.split.items)
        for proto, users in pending.items():
            advance = self.progress(f"{name} {proto}", len(users))
            for user in users:
                hist = ctx.split.history(user, "test")
                target = ctx.split.test[user]
                t = time.perf_counter()
                if proto == "p1":
                    cands = ctx.p1["test"][user]
                    scores = scorer.score(user, hist, cands)
                    rank: int | None = pessimistic_rank(scores, cands.index(target))
                    order = [cands[i] for i in np.argsort(-scores, kind="stable")]
                    latency = 1000 * (time.perf_counter() - t)
                    rec = {"user": user, "rank": rank, "list": order, "latency_ms": {"total": latency}}
                    rec["metrics"] = accuracy_metrics(rank, self.cfg.protocols.ks)
                else:
                    scores = scorer.score_all(user, hist).astype(np.float64)
                    valid = np.ones(n_items, dtype=bool)
                    valid[[index[i] for i in hist if i in index]] = False
                    rank = pessimistic_rank(scores, index[target], valid)
                    masked = np.where(valid, scores, -np.inf)
                    top = np.argsort(-masked, kind="stable")[: max(self.cfg.protocols.p3_cutoffs)]
                    order = [ctx.split.items[i] for i in top]
                    latency = 1000 * (time.perf_counter() - t)
                    rec = {"user": user, "rank": rank, "list": order[: self.cfg.protocols.list_len]}
                    rec["latency_ms"] = {"total": latency}
                    if proto == "p2":
                        rec["metrics"] = {
                            **accuracy_metrics(rank, sorted({*self.cfg.protocols.ks, 5, 10})),
                            **self._beyond(ctx, order),
                        }
                    else:
                        rec["metrics"] = {f"Recall@{c}": float(rank < c) for c in self.cfg.protocols.p3_cutoffs}
                caches[proto].add(rec)
                advance(1)
        return meta

    # -- our pipeline --------------------------------------------------------------------------------------------------
    def tuned_adapter(self, ctx: _Context, name: str) -> Path:
        """The LoRA adapter of a tuned system (``PIPELINE_SYSTEMS[name]["adapter"]``), tuned in the validation store
        (training interactions only: no validation or test item is a target, a history item or a reason) if it is
        not there yet; ``knowrec tune``'s checkpoint makes an interrupted tuning resumable."""
        spec = PIPELINE_SYSTEMS[name]
        out = self.out / "adapters" / spec["adapter"]
        if (out / "manifest.json").is_file():
            return out
        rec = self.recommender(ctx, "val", spec.get("tune_settings"))
        overrides = {**self.cfg.systems.tune, **spec["tune"]}
        rec.tune(out, progress=True, resume=(out / "checkpoint" / "state.json").is_file(), **overrides)
        rec.close()
        return out

    def tuned_users(self, ctx: _Context, name: str = "knowrec-tuned") -> list[str]:
        """The users the tuned system ``name`` runs on (``systems.tuned_users`` of the LLM users; an ablation:
        ``systems.ablation_users`` of those, from the same draw)."""
        n = self.cfg.systems.tuned_users
        if PIPELINE_SYSTEMS.get(name, {}).get("ablation") and self.cfg.systems.ablation_users != "all":
            n = min(int(self.cfg.systems.ablation_users), len(ctx.llm_users) if n == "all" else int(n))
        return sample_users(ctx.llm_users, n, self.cfg.run.seed + 2)

    def tune_llm_weight(
        self,
        ctx: _Context,
        name: str = "knowrec",
        adapter: Path | None = None,
        settings: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Pick the LLM fusion weight on the validation item (P2 lists of the system ``name``: the main one, or a
        tuned one with its ``adapter`` and its own ``settings``), post hoc from one pass. A choice cached on other
        users than this run's is made again (the per-user lists stay cached)."""
        scope = self.tuned_users(ctx, name) if adapter else ctx.llm_users
        systems = self.cfg.systems
        rule = {"rule": systems.llm_weight_rule, "alpha": systems.llm_weight_alpha, "weights": systems.llm_weights}
        meta_path = self.out / "cache" / name / "weight.json"
        if meta_path.exists():
            loaded: dict[str, Any] = json.loads(meta_path.read_text())
            if loaded.get("users") == len(scope) and all(loaded.get(key) == val for key, val in rule.items()):
                return loaded
        cache = UserCache(self.out / "cache" / name / "val-p2.jsonl")
        users = [u for u in scope if not cache.done(u)]
        if users:  # the lists are cached per user: a new rule is applied to them without a store or an LLM
            overrides = json.loads(json.dumps(settings or {}))
            if adapter:
                overrides["llm"] = {"adapter": str(adapter)}
            ranker = overrides.setdefault("ranker", {})
            ranker["llm_weight"] = ranker.get("llm_weight") or 0.3  # at 0 the LLM would not be asked
            rec = self.recommender(ctx, "val", overrides)
            k = rec.settings.ranker.rerank_top
            advance = self.progress("tune llm weight (val)", len(users))

            def one(user: str) -> dict[str, Any]:
                r = rec.recommend(user, k=k, diversity=0.0)
                return {
                    "user": user,
                    "retrieval": [it.item_id for it in sorted(r.items, key=lambda it: -it.retrieval_score)],
                    "llm": {it.item_id: it.llm_score for it in r.items if it.llm_score is not None},
                    "fallback": r.fallback,
                }

            self._map(users, one, cache, advance)
            rec.close()
        per_weight = llm_weight_scores({u: cache.records[u] for u in scope}, ctx.split.val, systems.llm_weights)
        meta = {**choose_llm_weight(per_weight, systems.llm_weight_rule, systems.llm_weight_alpha), **rule}
        meta["users"] = len(scope)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=1))
        return meta

    def tune_fusion(self, ctx: _Context) -> dict[str, Any]:
        """Choose the fusion (learned or RRF) on the validation item: P2 NDCG@10 of the pipeline without the LLM,
        over every evaluated user, in the validation store (fitted on the training split only)."""
        meta_path = self.out / "cache" / "knowrec" / "fusion.json"
        if meta_path.exists():
            loaded: dict[str, Any] = json.loads(meta_path.read_text())
            return loaded
        from knowrec.errors import KnowrecError

        table: list[dict[str, Any]] = []
        for mode in ("learned", "rrf"):
            try:
                rec = self.recommender(ctx, "val", {"retrieval": {"fusion": mode}})
                rec.pipeline("none")
            except KnowrecError as exc:
                table.append({"fusion": mode, "skipped": str(exc)})
                continue
            cache = UserCache(self.out / "cache" / "knowrec" / f"val-fusion-{mode}.jsonl")
            todo = [u for u in ctx.users if not cache.done(u)]
            advance = self.progress(f"fusion {mode} (val)", len(todo))

            def one(user: str, rec: Recommender = rec) -> dict[str, Any]:
                r = rec.recommend(user, k=self.cfg.protocols.list_len, mode="none", diversity=0.0)
                order = [it.item_id for it in r.items]
                return {"user": user, "rank": rank_in_list(order, ctx.split.val[user]), "fusion": r.fusion}

            self._map(todo, one, cache, advance)
            rec.close()
            ndcg = mean([accuracy_metrics(cache.records[u]["rank"], (10,))["NDCG@10"] for u in ctx.users])
            table.append({"fusion": mode, "NDCG@10": ndcg, "users": len(ctx.users)})
        scored = [r for r in table if "NDCG@10" in r]
        best = max(scored, key=lambda r: r["NDCG@10"])["fusion"] if scored else "rrf"
        meta = {"fusion": best, "grid": table}
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=1))
        return meta

    def run_pipeline(
        self, ctx: _Context, name: str, llm_weight: float | None, fusion: str | None = None
    ) -> dict[str, Any]:
        spec = PIPELINE_SYSTEMS[name]
        overrides = json.loads(json.dumps(spec["settings"]))
        if fusion is not None:
            overrides.setdefault("retrieval", {}).setdefault("fusion", fusion)
        if llm_weight is not None and spec["llm"]:
            overrides.setdefault("ranker", {})["llm_weight"] = llm_weight
        users = ctx.llm_users if spec["llm"] else ctx.users
        meta_extra: dict[str, Any] = {}
        if "tune" in spec:
            users = self.tuned_users(ctx, name)  # a tuned ranker: its adapter, its LLM weight chosen on validation
            adapter = self.tuned_adapter(ctx, name)
            overrides["llm"] = {"adapter": str(adapter)}
            weight = self.tune_llm_weight(ctx, name, adapter, spec["settings"])
            overrides.setdefault("ranker", {})["llm_weight"] = weight["llm_weight"]
            tuned = json.loads((adapter / "manifest.json").read_text())
            meta_extra = {
                "adapter": {k: tuned.get(k) for k in ("objectives", "examples", "best", "zero_shot", "wall_s")},
                "weight_tuning": weight,
            }
        call = dict(spec["call"])
        self._retire_stale_lists(name, overrides, call, store=self._fingerprint(ctx))
        rec = self.recommender(ctx, "test", overrides, models=spec.get("models"))
        list_len = self.cfg.protocols.list_len
        meta: dict[str, Any] = {"settings": overrides, "call": call, "users": len(users), "llm": spec["llm"]}
        meta.update(meta_extra)
        meta["models"] = rec.models_info()
        for proto in self.cfg.protocols.names:
            if proto == "p4":  # conversations: run_p4
                continue
            cache = UserCache(self.out / "cache" / name / f"{proto}.jsonl")
            todo = [u for u in users if not cache.done(u)]
            if proto == "p3":
                if name != "retrieval-only":
                    continue
                self._run_p3(ctx, rec, cache, todo)
                continue
            advance = self.progress(f"{name} {proto}", len(todo))

            def one(user: str, proto: str = proto) -> dict[str, Any]:
                target = ctx.split.test[user]
                if proto == "p1":
                    cands = ctx.p1["test"][user]
                    r = rec.recommend(user, k=len(cands), candidates=cands, **call)
                    allowed = set(cands)
                else:
                    r = rec.recommend(user, k=list_len, **call)
                    allowed = set(ctx.split.items) - set(ctx.split.history(user, "test"))
                order = [it.item_id for it in r.items]
                rank = rank_in_list(order, target)
                cited = [(it.item_id, fid) for it in r.items for reason in it.reasons for fid in reason.fact_ids]
                stored = rec.store.get_facts([f for _, f in cited])
                grounded = sum(1 for item, f in cited if f in stored and item in (stored[f].head, stored[f].tail))
                metrics = accuracy_metrics(rank, sorted({*self.cfg.protocols.ks, 5, 10}))
                if proto == "p2":
                    metrics.update(self._beyond(ctx, order))
                return {
                    "user": user,
                    "rank": rank,
                    "list": order,
                    "metrics": metrics,
                    "latency_ms": r.timings_ms,
                    "usage": r.usage,
                    "fallback": r.fallback,
                    "repaired": bool(r.repairs),
                    "out_of_candidates": sum(1 for i in order if i not in allowed),
                    "duplicates": len(order) - len(set(order)),
                    "cited": len(cited),
                    "grounded": grounded,
                    "items_with_reason": sum(1 for it in r.items if it.reasons),
                    "n_items": len(order),
                }

            self._map(todo, one, cache, advance)
        rec.close()
        return meta

    def _retire_stale_lists(self, name: str, overrides: dict[str, Any], call: dict[str, Any], store: str) -> None:
        """The per-user test lists (P1–P3, P4's dialogues) of ``name`` hold only while its settings and its store
        (``store``: the stores' fingerprint) do: lists cached under other settings (an LLM weight chosen again under a
        new rule, another adapter) or over another store move to ``cache/NAME/stale/`` and are made again. A cache
        from before this check is judged by the settings its ``results.json`` recorded, and one that recorded no
        store by the store of that time (stores before :data:`STORE_ORDER` tied equal timestamps by item id)."""

        def signature(settings: dict[str, Any], call: dict[str, Any], store: str | None) -> str:
            settings = json.loads(json.dumps(settings))
            if "adapter" in settings.get("llm", {}):  # the adapter's folder name: the run may start elsewhere
                settings["llm"]["adapter"] = Path(str(settings["llm"]["adapter"])).name
            return json.dumps({"settings": settings, "call": call, "store": store}, sort_keys=True)

        folder = self.out / "cache" / name
        record = folder / "settings.json"
        now = signature(overrides, call, store)
        before: str | None = None
        if record.exists():
            saved = json.loads(record.read_text())
            before = signature(saved["settings"], saved["call"], saved.get("store"))
        elif (self.out / "results.json").exists():
            meta = json.loads((self.out / "results.json").read_text()).get("systems", {}).get(name, {}).get("meta")
            if meta and "settings" in meta:
                before = signature(meta["settings"], meta.get("call", {}), None)
        lists = [folder / f"{proto}.jsonl" for proto in ("p1", "p2", "p3", "p4")]
        if before is not None and before != now and any(f.exists() for f in lists):
            (folder / "stale").mkdir(parents=True, exist_ok=True)
            for f in lists:
                if f.exists():
                    f.replace(folder / "stale" / f.name)
            log.warning(
                "%s: its settings changed (%s → %s); its cached test lists moved to %s",
                name,
                before,
                now,
                folder / "stale",
            )
        folder.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"settings": overrides, "call": call, "store": store}, indent=1, default=str))

    def p4_users(self, ctx: _Context) -> list[str]:
        """The simulated users of P4 (``protocols.p4_users`` of the evaluated users, drawn with seed + 4)."""
        return sample_users(ctx.users, self.cfg.protocols.p4_users, self.cfg.run.seed + 4)

    def p4_llm_users(self, ctx: _Context) -> list[str]:
        """The P4 users the LLM systems play (``protocols.p4_llm_users`` of them, drawn with seed + 5)."""
        return sample_users(self.p4_users(ctx), self.cfg.protocols.p4_llm_users, self.cfg.run.seed + 5)

    def p4_scripts(self, ctx: _Context) -> dict[str, list[Any]]:
        """Each P4 user's scripted messages (the same for every system), towards its test item."""
        from knowrec.eval.conversation import simulated_user

        cat = self._catalogue(ctx)
        threshold = Settings().retrieval.like_threshold
        protos = self.cfg.protocols
        out: dict[str, list[Any]] = {}
        for user in self.p4_users(ctx):
            before = ctx.sequences[user][:-1]  # the test store's history: training items and the validation item
            liked = [x.item_id for x in reversed(before) if x.rating is None or x.rating >= threshold]
            sim = simulated_user(user, ctx.split.test[user], liked, cat, self.cfg.run.seed, protos.p4_more_rate)
            out[user] = sim.script(protos.p4_turns, cat.titles)
        return out

    def _catalogue(self, ctx: _Context) -> Catalogue:
        from knowrec.eval.conversation import Catalogue

        if self._cat is None:
            self._cat = Catalogue(ctx.dataset, ctx.split.items)
        return self._cat

    def run_p4(self, ctx: _Context, llm_weight: float | None, fusion: str | None) -> None:
        """P4: every conversational system plays the same scripted dialogues (:mod:`knowrec.eval.conversation`)."""
        from collections import Counter

        from knowrec.eval.conversation import ConstrainedPopularity, RecommenderChat, run_dialogue

        scripts = self.p4_scripts(ctx)
        cat = self._catalogue(ctx)
        k = self.cfg.protocols.p4_k
        llm_users = set(self.p4_llm_users(ctx))
        for name in self.cfg.systems.conversational:
            cache = UserCache(self.out / "cache" / name / "p4.jsonl")
            todo = [u for u in scripts if not cache.done(u) and (name != "knowrec" or u in llm_users)]
            if not todo:
                continue
            rec: Recommender | None = None
            system: Any
            if name == "constrained-pop":
                counts = Counter(x.item_id for u in ctx.split.users for x in ctx.sequences[u][:-1])
                system = ConstrainedPopularity(dict(counts), cat, lambda u: set(ctx.split.history(u, "test")))
            else:
                chat: dict[str, Any] = {
                    "record_feedback": False,  # the test store stays as it is: no "not those" becomes a rating
                    "sessions_file": str(self.out / "stores" / f"p4-sessions-{name}.sqlite"),
                }
                overrides: dict[str, Any] = {"chat": chat}
                if fusion is not None:
                    overrides["retrieval"] = {"fusion": fusion}
                if name == "knowrec":
                    overrides["ranker"] = {"llm_weight": llm_weight} if llm_weight is not None else {}
                else:
                    overrides["ranker"] = {"mode": "none"}
                    chat["extract_with_llm"] = False
                rec = self.recommender(ctx, "test", overrides)
                system = RecommenderChat(rec)
            advance = self.progress(f"{name} p4", len(todo))
            for user in todo:
                cache.add(run_dialogue(system, user, scripts[user], ctx.split.test[user], k, cat))
                advance(1)
            if rec is not None:
                rec.close()

    def _run_p3(self, ctx: _Context, rec: Recommender, cache: UserCache, users: list[str]) -> None:
        """Recall of each candidate generator alone and of their fusion, at the configured cutoffs."""
        pipe = rec.pipeline("none")
        cutoffs = self.cfg.protocols.p3_cutoffs
        n = max(cutoffs)
        advance = self.progress("retrieval p3", len(users))
        for user in users:
            prof = pipe.profile(user)
            q = RecQuery(user_id=user, k=10, history=prof.liked, seen=prof.seen, sequence=prof.sequence)
            own = pipe.generate(q, n)
            lists = {name: [c.item_id for c in cands] for name, cands in own.items()}
            lists["fused"] = pipe.fuse(q, own, n).ids()
            if pipe.fusion is not None:  # the same generators' lists under RRF, for comparison
                lists["fused-rrf"] = [c.item_id for c in rrf_order(build_candidate_list(own), pipe.retrieval.weights)][
                    :n
                ]
            target = ctx.split.test[user]
            metrics = {f"{g}:Recall@{c}": float(target in lst[:c]) for g, lst in lists.items() for c in cutoffs}
            cache.add({"user": user, "rank": rank_in_list(lists["fused"], target), "metrics": metrics})
            advance(1)

    def _map(
        self,
        users: Iterable[str],
        fn: Callable[[str], dict[str, Any]],
        cache: UserCache,
        advance: Callable[[int], None],
    ) -> None:
        workers = self.cfg.run.llm_concurrency
        if workers <= 1:
            for user in users:
                cache.add(fn(user))
                advance(1)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for rec in pool.map(fn, users):
                cache.add(rec)
                advance(1)

    # -- the whole run -------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        ctx = self.load()
        self.out.mkdir(parents=True, exist_ok=True)
        meta: dict[str, dict[str, Any]] = {}
        for baseline in self.cfg.systems.baselines:
            meta[baseline] = self.run_baseline(ctx, baseline)
        weight: dict[str, Any] | None = None
        fusion: dict[str, Any] | None = None
        if self.cfg.systems.pipeline:
            fusion = self.tune_fusion(ctx)
        if any(PIPELINE_SYSTEMS[s]["llm"] and "tune" not in PIPELINE_SYSTEMS[s] for s in self.cfg.systems.pipeline):
            weight = self.tune_llm_weight(ctx)
        for name in self.cfg.systems.pipeline:
            meta[name] = self.run_pipeline(
                ctx, name, weight["llm_weight"] if weight else None, fusion["fusion"] if fusion else None
            )
            if fusion is not None:
                meta[name]["fusion_tuning"] = fusion
        if "p4" in self.cfg.protocols.names:
            if "knowrec" in self.cfg.systems.conversational and weight is None:
                weight = self.tune_llm_weight(ctx)
            if self.cfg.systems.conversational and fusion is None:
                fusion = self.tune_fusion(ctx)
            self.run_p4(ctx, weight["llm_weight"] if weight else None, fusion["fusion"] if fusion else None)
        from knowrec.eval.report import build_results, write_report

        subsets: dict[str, list[str]] = {}
        for name in self.cfg.systems.pipeline:
            if "tune" in PIPELINE_SYSTEMS[name]:
                label = "ablation_users" if PIPELINE_SYSTEMS[name].get("ablation") else "tuned_users"
                tuned = self.tuned_users(ctx, name)
                if len(tuned) < len(ctx.llm_users):
                    subsets[label] = tuned
        if "p4" in self.cfg.protocols.names:
            p4_llm = self.p4_llm_users(ctx)
            if len(p4_llm) < len(self.p4_users(ctx)):
                subsets["p4_llm_users"] = p4_llm
        results = build_results(self.cfg, ctx.split, ctx.users, ctx.llm_users, meta, weight, self.out, subsets)
        results["wall_s"] = round(time.perf_counter() - started, 1)
        (self.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        write_report(results, self.out)
        return results
