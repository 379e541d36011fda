"""Ranking metrics for one held-out item per user, and the beyond-accuracy set.

Ranks are 0-based and pessimistic: every other candidate scoring at least as high as the target is ranked above it,
so a constant scorer gets the worst possible rank (never a lucky tie).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations

import numpy as np

__all__ = [
    "accuracy_metrics",
    "auc",
    "catalogue_coverage",
    "coverage",
    "hit_at",
    "intra_list_diversity",
    "mean",
    "mrr_at",
    "ndcg_at",
    "percentiles",
    "pessimistic_rank",
    "rank_in_list",
]


def pessimistic_rank(scores: np.ndarray, target: int, valid: np.ndarray | None = None) -> int:
    """0-based rank of ``scores[target]`` among the ``valid`` entries; ties count against the target.

    Example:
        >>> pessimistic_rank(np.array([0.5, 0.9, 0.5, 0.1]), 0)
        2
    """
    s = scores[target]
    if math.isnan(s):
        s = -math.inf
    beats = scores >= s
    if valid is not None:
        beats &= valid
    beats[target] = False
    return int(beats.sum())


def rank_in_list(ranked: Sequence[str], target: str) -> int | None:
    """0-based position of ``target`` in a ranked list, ``None`` when absent (a miss at every cutoff)."""
    try:
        return list(ranked).index(target)
    except ValueError:
        return None


def ndcg_at(rank: int | None, k: int) -> float:
    """NDCG@k with one relevant item: ``1 / log2(rank + 2)`` if it is in the top k, else 0."""
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def hit_at(rank: int | None, k: int) -> float:
    """HR@k (= Recall@k with one relevant item)."""
    return 1.0 if rank is not None and rank < k else 0.0


def mrr_at(rank: int | None, k: int) -> float:
    return 1.0 / (rank + 1) if rank is not None and rank < k else 0.0


def accuracy_metrics(rank: int | None, ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    """``NDCG@k``, ``HR@k``, ``Recall@k`` and ``MRR@k`` for each k, from the target's rank.

    Example:
        >>> accuracy_metrics(1, ks=(1, 5))["NDCG@5"]
        0.6309297535714575
    """
    out: dict[str, float] = {}
    for k in ks:
        out[f"NDCG@{k}"] = ndcg_at(rank, k)
        out[f"HR@{k}"] = hit_at(rank, k)
        out[f"Recall@{k}"] = hit_at(rank, k)
        out[f"MRR@{k}"] = mrr_at(rank, k)
    return out


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Probability that a positive outscores a negative (ties count one half).

    Example:
        >>> auc([0.9], [0.1, 0.9, 1.0])
        0.5
    """
    if not pos or not neg:
        return float("nan")
    p = np.asarray(pos, dtype=float)[:, None]
    n = np.asarray(neg, dtype=float)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def intra_list_diversity(vectors: Sequence[np.ndarray]) -> float:
    """Mean pairwise cosine distance ``1 − cos`` within a list (vectors need not be normalised)."""
    if len(vectors) < 2:
        return 0.0
    vs = [v / (np.linalg.norm(v) or 1.0) for v in vectors]
    dists = [1.0 - float(np.dot(a, b)) for a, b in combinations(vs, 2)]
    return float(np.mean(dists))


def coverage(lists_of_sets: Sequence[set[str]]) -> int:
    """Number of distinct labels (entities or genres) covered by one list's items."""
    out: set[str] = set()
    for s in lists_of_sets:
        out |= s
    return len(out)


def catalogue_coverage(lists: Iterable[Sequence[str]], n_items: int) -> float:
    """Share of the catalogue that appears in at least one recommended list."""
    seen: set[str] = set()
    for lst in lists:
        seen.update(lst)
    return len(seen) / n_items if n_items else 0.0


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 95)) -> dict[str, float]:
    if not values:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return float(np.mean(vals)) if vals else float("nan")


def mean_metrics(per_user: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over users."""
    keys = {k for m in per_user.values() for k in m}
    return {k: mean(m[k] for m in per_user.values() if k in m) for k in sorted(keys)}
