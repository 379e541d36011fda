"""Maximal marginal relevance over item embeddings and shared KG entities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["item_similarity", "mmr"]


def item_similarity(
    a: str,
    b: str,
    vectors: Mapping[str, np.ndarray],
    entities: Mapping[str, set[str]],
    embedding_weight: float = 0.5,
) -> float:
    """``w · cosine(vectors) + (1 − w) · Jaccard(entities)``; a missing side counts as 0."""
    cos = 0.0
    if a in vectors and b in vectors:
        cos = float(np.dot(vectors[a], vectors[b]))
    ea, eb = entities.get(a, set()), entities.get(b, set())
    jac = len(ea & eb) / len(ea | eb) if ea and eb else 0.0
    return embedding_weight * cos + (1 - embedding_weight) * jac


def mmr(
    relevance: Mapping[str, float],
    k: int,
    diversity: float,
    vectors: Mapping[str, np.ndarray],
    entities: Mapping[str, set[str]],
    embedding_weight: float = 0.5,
    order: Sequence[str] | None = None,
) -> list[str]:
    """Pick ``k`` items greedily by ``(1 − d) · relevance − d · max similarity to the items already picked``.

    ``diversity=0`` returns the relevance order unchanged. Ties keep ``order`` (default: relevance order).

    Example:
        >>> v = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 0.0]), "c": np.array([0.0, 1.0])}
        >>> mmr({"a": 1.0, "b": 0.9, "c": 0.8}, 2, 0.0, v, {})
        ['a', 'b']
        >>> mmr({"a": 1.0, "b": 0.9, "c": 0.8}, 2, 0.7, v, {}, embedding_weight=1.0)
        ['a', 'c']
    """
    base = list(order) if order is not None else sorted(relevance, key=lambda i: -relevance[i])
    if diversity <= 0.0 or k <= 1:
        return base[:k]
    remaining = list(base)
    picked: list[str] = []
    max_sim = dict.fromkeys(remaining, 0.0)
    while remaining and len(picked) < k:
        best = max(remaining, key=lambda i: ((1 - diversity) * relevance[i] - diversity * max_sim[i], -base.index(i)))
        picked.append(best)
        remaining.remove(best)
        for i in remaining:
            max_sim[i] = max(max_sim[i], item_similarity(best, i, vectors, entities, embedding_weight))
    return picked
