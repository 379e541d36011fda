"""Fusion of the candidate generators' lists: per-candidate features and a learned ranking model, or RRF.

The learned fusion is a LightGBM LambdaRank model over :data:`FEATURES` (fitted by :mod:`knowrec.fitting`). Why a
gradient-boosted lambdarank rather than a linear model or an MLP: it optimises NDCG directly, it takes the
generators' scores as they are (EASE sums, transformer logits, cosines and counts live on unrelated scales, and a
tree model needs no normalisation), a candidate missing from a generator's list is a missing value it handles
natively, it learns interactions a linear model cannot (popularity should count for more when the history is short),
and it fits on a few hundred thousand rows on two CPU cores in seconds, deterministically with a seed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from knowrec.errors import ConfigError
from knowrec.types import Candidate, KGPath

__all__ = ["FEATURES", "FusionContext", "ItemStats", "LearnedFusion", "build_candidate_list", "rrf_order"]

log = logging.getLogger(__name__)

GENERATORS = ("sequential", "collaborative", "kg", "vector", "popularity")

FEATURES: tuple[str, ...] = (
    # the sequential model and EASE score the whole catalogue, so every candidate has their score and rank
    "sequential_score",
    "sequential_rank",
    "sequential_prob",
    "collaborative_score",
    "collaborative_rank",
    # knowledge-graph paths to the history: score, how many paths, the heaviest, how recent the history item is
    "kg_score",
    "kg_rank",
    "kg_paths",
    "kg_max_weight",
    "kg_max_rarity",
    "kg_recency",
    # text: cosine to the history profile and to the query
    "vector_rank",
    "vector_history_sim",
    "vector_query_sim",
    # the item itself: popularity (log count, catalogue percentile), rating quality (shrunk mean, log count)
    "popularity_log",
    "popularity_pct",
    "rating_mean",
    "rating_count_log",
    # taste: genre overlap with the recent history
    "genre_overlap",
    # transitions: how often the candidate followed the user's last item (and the last few) in the fitted sequences
    "transition_last",
    "transition_recent",
    # the user: history length, whether a query was given
    "history_len_log",
    "has_query",
)


@dataclass
class ItemStats:
    """Per-item statistics computed at fit time from the fitted interactions only (no held-out item reaches them).

    Attributes:
        items: The catalogue, in row order.
        counts: Interactions per item.
        rating_mean: Mean rating shrunk towards the global mean with ``prior`` pseudo-ratings (NaN: no ratings).
        rating_count: Ratings per item.
        genres: Binary item × genre matrix (entities whose id starts with ``genre:``).
        transitions: Row-normalised item × item matrix: how often item ``j`` came within
            :data:`TRANSITION_WINDOW` positions after item ``i`` in a user's sequence (weighted ``1 / distance``),
            divided by all that followed ``i``; ``None`` in statistics saved before it existed.
    """

    items: list[str]
    counts: np.ndarray
    rating_mean: np.ndarray
    rating_count: np.ndarray
    genres: sp.csr_matrix
    transitions: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        self.index = {item: i for i, item in enumerate(self.items)}
        order = np.argsort(-self.counts, kind="stable")
        self.pop_order = order
        rank = np.empty(len(self.items), dtype=np.float64)
        rank[order] = np.arange(len(self.items))
        self.pop_pct = rank / max(len(self.items) - 1, 1)  # 0 = most popular

    @classmethod
    def build(
        cls,
        items: Sequence[str],
        sequences: Mapping[str, Sequence[tuple[str, float | None]]],
        genres_of: Mapping[str, set[str]],
        prior: float = 10.0,
    ) -> ItemStats:
        """From ``{user: [(item, rating or None), …]}`` and each item's genre entities."""
        index = {item: i for i, item in enumerate(items)}
        n = len(items)
        counts = np.zeros(n)
        rsum = np.zeros(n)
        rcount = np.zeros(n)
        for seq in sequences.values():
            for item, rating in seq:
                j = index.get(item)
                if j is None:
                    continue
                counts[j] += 1
                if rating is not None:
                    rsum[j] += rating
                    rcount[j] += 1
        total = rcount.sum()
        glob = rsum.sum() / total if total else math.nan
        mean = (
            np.where(rcount > 0, (rsum + prior * glob) / (rcount + prior), math.nan) if total else np.full(n, math.nan)
        )
        names = sorted({g for gs in genres_of.values() for g in gs})
        gidx = {g: k for k, g in enumerate(names)}
        rows, cols = [], []
        for item, gs in genres_of.items():
            j = index.get(item)
            if j is None:
                continue
            for g in gs:
                rows.append(j)
                cols.append(gidx[g])
        mat = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, max(len(names), 1)))
        return cls(list(items), counts, mean, rcount, mat, transition_matrix(index, sequences))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        g = self.genres.tocoo()
        np.savez_compressed(
            tmp,
            items=np.array(self.items, dtype=object),
            counts=self.counts,
            rating_mean=self.rating_mean,
            rating_count=self.rating_count,
            g_row=g.row,
            g_col=g.col,
            g_shape=np.array(g.shape),
            **(
                {
                    "t_data": self.transitions.data,
                    "t_indices": self.transitions.indices,
                    "t_indptr": self.transitions.indptr,
                }
                if self.transitions is not None
                else {}
            ),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ItemStats:
        with np.load(path, allow_pickle=True) as d:
            shape = tuple(int(x) for x in d["g_shape"])
            mat = sp.csr_matrix((np.ones(len(d["g_row"])), (d["g_row"], d["g_col"])), shape=shape)
            n = len(d["items"])
            trans = sp.csr_matrix((d["t_data"], d["t_indices"], d["t_indptr"]), shape=(n, n)) if "t_data" in d else None
            return cls([str(i) for i in d["items"]], d["counts"], d["rating_mean"], d["rating_count"], mat, trans)


TRANSITION_WINDOW = 3
"""How many following items of a sequence count as transitions from an item (weighted ``1 / distance``)."""


def transition_matrix(
    index: Mapping[str, int],
    sequences: Mapping[str, Sequence[tuple[str, float | None]]],
    window: int = TRANSITION_WINDOW,
) -> sp.csr_matrix:
    """Row-normalised transitions ``i → j`` (``j`` within ``window`` positions after ``i``, weight ``1 / distance``).

    Example:
        >>> t = transition_matrix({"a": 0, "b": 1, "c": 2}, {"u": [("a", None), ("b", None), ("c", None)]}, window=2)
        >>> t.toarray().round(3).tolist()
        [[0.0, 0.667, 0.333], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    n = len(index)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for seq in sequences.values():
        ids = np.fromiter((index.get(i, -1) for i, _ in seq), dtype=np.int64, count=len(seq))
        ids = ids[ids >= 0]
        for d in range(1, window + 1):
            if len(ids) > d:
                rows.append(ids[:-d])
                cols.append(ids[d:])
                vals.append(np.full(len(ids) - d, 1.0 / d))
    if not rows:
        return sp.csr_matrix((n, n))
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    keep = r != c  # an item followed by itself (a re-rating) is no transition
    mat = sp.csr_matrix((v[keep], (r[keep], c[keep])), shape=(n, n))
    mat.sum_duplicates()
    out = np.asarray(mat.sum(axis=1)).ravel()
    inv = np.divide(1.0, out, out=np.zeros(n), where=out > 0)
    return sp.csr_matrix(sp.diags(inv) @ mat)


@dataclass
class FusionContext:
    """What the features of one query need besides the generators' lists (computed once per call)."""

    history: Sequence[str]
    """Liked items, most recent first (the KG and vector profile)."""
    sequence_len: int
    """Length of the whole interaction sequence."""
    has_query: bool
    sequential_scores: np.ndarray | None = None
    """Scores of every item of ``sequential_items`` (the fitted catalogue)."""
    sequential_index: Mapping[str, int] | None = None
    collaborative_scores: np.ndarray | None = None
    collaborative_index: Mapping[str, int] | None = None
    history_sims: Mapping[str, float] | None = None
    query_sims: Mapping[str, float] | None = None
    sequence: Sequence[str] = ()
    """The interaction sequence in time order (the transition features read its last items)."""


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every entry (best = 1), ties by position."""
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.float64)
    rank[order] = np.arange(1, len(scores) + 1)
    return rank


def _ranks_of(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """:func:`_ranks` of the entries ``rows`` only (one sort instead of an argsort of the whole catalogue).

    Rank = 1 + how many entries score higher + how many equal ones come earlier (ties by position, as
    :func:`_ranks`). NaN scores are not expected (the generators' scores are finite)."""
    ordered = np.sort(scores)
    vals = scores[rows]
    hi = np.searchsorted(ordered, vals, side="right")
    rank = (len(scores) - hi + 1).astype(np.float64)
    tied = np.flatnonzero(hi - np.searchsorted(ordered, vals, side="left") > 1)
    for t in tied:  # rare: count the equal entries before this one
        rank[t] += np.count_nonzero(scores[: rows[t]] == vals[t])
    return rank


def build_candidate_list(lists: Mapping[str, Sequence[Candidate]]) -> list[Candidate]:
    """The union of the generators' lists: per candidate, every generator's score (``sources``) and 1-based rank
    (``ranks``) and the KG paths; in first-seen order (generators in the given order)."""
    sources: dict[str, dict[str, float]] = {}
    ranks: dict[str, dict[str, int]] = {}
    paths: dict[str, tuple[KGPath, ...]] = {}
    for name, cands in lists.items():
        for rank, c in enumerate(cands, start=1):
            sources.setdefault(c.item_id, {})[name] = c.sources.get(name, c.score) if c.sources else c.score
            ranks.setdefault(c.item_id, {})[name] = rank
            if c.paths and c.item_id not in paths:
                paths[c.item_id] = c.paths
    return [
        Candidate(item_id=i, score=0.0, sources=sources[i], ranks=ranks[i], paths=paths.get(i, ())) for i in sources
    ]


def rrf_order(cands: Sequence[Candidate], weights: Mapping[str, float], k: int = 60) -> list[Candidate]:
    """Weighted reciprocal-rank fusion: ``score = Σ_g weight_g / (k + rank_g)``, best first (ties by item id)."""
    scored = [
        c.model_copy(update={"score": sum(weights.get(g, 1.0) / (k + r) for g, r in c.ranks.items())}) for c in cands
    ]
    return sorted(scored, key=lambda c: (-c.score, c.item_id))


def feature_matrix(cands: Sequence[Candidate], ctx: FusionContext, stats: ItemStats | None) -> np.ndarray:
    """One row of :data:`FEATURES` per candidate (NaN = not available, e.g. not in that generator's list)."""
    n = len(cands)
    rows = np.full((n, len(FEATURES)), math.nan, dtype=np.float64)
    col = {name: j for j, name in enumerate(FEATURES)}
    ids = [c.item_id for c in cands]

    def positions(index: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """(candidate rows found in ``index``, their positions there)."""
        pos = np.fromiter((index.get(i, -1) for i in ids), dtype=np.int64, count=n)
        found = np.flatnonzero(pos >= 0)
        return found, pos[found]

    for name, scores, index in (
        ("sequential", ctx.sequential_scores, ctx.sequential_index),
        ("collaborative", ctx.collaborative_scores, ctx.collaborative_index),
    ):
        if scores is not None and index is not None:
            found, pos = positions(index)
            if len(found):
                rows[found, col[f"{name}_score"]] = scores[pos]
                rows[found, col[f"{name}_rank"]] = [math.log(v) for v in _ranks_of(scores, pos)]
                if name == "sequential":  # the softmax probability: comparable across users, unlike a logit
                    top = float(scores.max())
                    log_z = top + math.log(float(np.exp(scores - top).sum()))
                    rows[found, col["sequential_prob"]] = np.exp(scores[pos] - log_z)
    recency = {item: 0.5 ** (pos / 20.0) for pos, item in reversed(list(enumerate(ctx.history)))}
    for r, c in enumerate(cands):
        if "kg" in c.sources:
            rows[r, col["kg_score"]] = c.sources["kg"]
            rows[r, col["kg_rank"]] = math.log(c.ranks.get("kg", 1))
        if c.paths:
            rows[r, col["kg_paths"]] = len(c.paths)
            rows[r, col["kg_max_weight"]] = max(p.weight for p in c.paths)
            rows[r, col["kg_recency"]] = max(recency.get(p.source_item, 0.0) for p in c.paths)
            # a path's weight is the seed's recency weight × the entity's rarity log(1 + N/df)
            rows[r, col["kg_max_rarity"]] = max(p.weight / (recency.get(p.source_item) or 1.0) for p in c.paths)
        if "vector" in c.ranks:
            rows[r, col["vector_rank"]] = math.log(c.ranks["vector"])
    for name, sims in (("vector_history_sim", ctx.history_sims), ("vector_query_sim", ctx.query_sims)):
        if sims is not None:
            rows[:, col[name]] = [sims.get(i, math.nan) for i in ids]
    if stats is not None:
        found, j = positions(stats.index)
        # math.log1p, not np.log1p: the same bits as the features the fusion was trained on
        rows[found, col["popularity_log"]] = [math.log1p(v) for v in stats.counts[j]]
        rows[found, col["popularity_pct"]] = stats.pop_pct[j]
        rows[found, col["rating_mean"]] = stats.rating_mean[j]
        rows[found, col["rating_count_log"]] = [math.log1p(v) for v in stats.rating_count[j]]
        if ctx.history and len(found):
            idx = [stats.index[i] for i in ctx.history[:20] if i in stats.index]
            if idx:
                w = np.array([0.5 ** (p / 5.0) for p in range(len(idx))])
                prof = np.asarray(stats.genres[idx].T @ w).ravel()
                norm = np.linalg.norm(prof)
                if norm:
                    sub = stats.genres[j]
                    nnz = np.sqrt(np.diff(sub.indptr).astype(np.float64))
                    sims = np.divide(sub @ (prof / norm), nnz, out=np.zeros(len(j)), where=nnz > 0)
                    rows[found, col["genre_overlap"]] = sims
        if stats.transitions is not None and ctx.sequence and len(found):
            recent = [stats.index[i] for i in reversed(ctx.sequence[-5:]) if i in stats.index]
            if recent:
                sub = stats.transitions[recent][:, j].toarray()  # recent items × found candidates
                rows[found, col["transition_last"]] = sub[0] if ctx.sequence[-1] in stats.index else 0.0
                w = np.array([0.5**p for p in range(len(recent))])
                rows[found, col["transition_recent"]] = w @ sub
    rows[:, col["history_len_log"]] = math.log1p(ctx.sequence_len)
    rows[:, col["has_query"]] = float(ctx.has_query)
    return rows


class LearnedFusion:
    """A fitted LightGBM ranking model over :data:`FEATURES`; ``score`` returns one value per row (higher = better).

    Example (needs a fitted model; not run as a doctest)::

        fusion = LearnedFusion.load(Path("models/fusion"))
        fusion.score(feature_matrix(cands, ctx, stats))
    """

    MODEL_FILE = "fusion.lgb.txt"
    META_FILE = "fusion.json"

    def __init__(self, booster: Any, meta: dict[str, Any]) -> None:
        self.booster = booster
        self.meta = meta
        if tuple(meta.get("features", ())) != FEATURES:
            raise ConfigError("the fitted fusion was trained on other features; run `knowrec fit` again")

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (self.MODEL_FILE + ".tmp")
        self.booster.save_model(str(tmp))
        tmp.replace(folder / self.MODEL_FILE)
        (folder / self.META_FILE).write_text(json.dumps(self.meta, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> LearnedFusion:
        """The fusion fitted into ``folder``.

        Raises:
            ConfigError: the files cannot be read, or were fitted on other features (run ``knowrec fit`` again).
        """
        import lightgbm as lgb

        try:
            meta = json.loads((folder / cls.META_FILE).read_text(encoding="utf-8"))
            booster = lgb.Booster(model_file=str(folder / cls.MODEL_FILE))
        except (OSError, ValueError, lgb.basic.LightGBMError) as exc:
            raise ConfigError(f"cannot read the fitted fusion in {folder}: {exc}") from exc
        if not isinstance(meta, dict):
            raise ConfigError(f"{folder / cls.META_FILE} is not a JSON object; run `knowrec fit` again")
        return cls(booster, meta)

    @classmethod
    def exists(cls, folder: Path) -> bool:
        return (folder / cls.MODEL_FILE).is_file() and (folder / cls.META_FILE).is_file()
