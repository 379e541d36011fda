"""Candidate generators (vector, knowledge graph, collaborative, popularity) and their fusion."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from knowrec.agent.collaborative import EASE
from knowrec.kg_store.base import Embedder, GraphStore, ItemIndex
from knowrec.types import Candidate, KGPath, RecQuery

__all__ = [
    "CandidateGenerator",
    "CollaborativeGenerator",
    "KGGenerator",
    "PopularityGenerator",
    "VectorGenerator",
    "recency_weights",
    "reciprocal_rank_fusion",
]

log = logging.getLogger(__name__)


@runtime_checkable
class CandidateGenerator(Protocol):
    """Returns scored candidates for a query, best first, never an item in ``query.seen`` or ``query.exclude``."""

    name: str

    def generate(self, query: RecQuery, n: int) -> list[Candidate]: ...


def recency_weights(history: Sequence[str], half_life: float = 20.0) -> dict[str, float]:
    """Weight of each history item (most recent first): ``0.5 ** (position / half_life)``.

    Example:
        >>> recency_weights(["a", "b"], half_life=1.0)
        {'a': 1.0, 'b': 0.5}
    """
    out: dict[str, float] = {}
    for pos, item in enumerate(history):
        out.setdefault(item, 0.5 ** (pos / half_life))
    return out


def _banned(query: RecQuery) -> frozenset[str]:
    return query.seen | frozenset(query.exclude)


def _restrict(query: RecQuery, cands: list[Candidate], n: int) -> list[Candidate]:
    """Keep only ``query.candidates`` when the query fixes them."""
    if query.candidates:
        allowed = set(query.candidates)
        cands = [c for c in cands if c.item_id in allowed]
    return cands[:n]


class VectorGenerator:
    """Nearest items to the query text and/or the recency-weighted mean of the history's item vectors."""

    name = "vector"

    def __init__(self, index: ItemIndex, embedder: Embedder, query_weight: float = 0.7) -> None:
        self.index = index
        self.embedder = embedder
        self.query_weight = query_weight

    def profile_vector(self, query: RecQuery) -> np.ndarray | None:
        """The vector searched with, or ``None`` when there is neither history nor query text."""
        profile: np.ndarray | None = None
        if query.history:
            weights = recency_weights(query.history)
            vecs = self.index.vectors(list(weights))
            if vecs:
                summed = np.sum([weights[i] * v for i, v in vecs.items()], axis=0)
                profile = summed / (np.linalg.norm(summed) or 1.0)
        if query.query:
            qv = self.embedder.embed([query.query])[0]
            profile = qv if profile is None else self.query_weight * qv + (1 - self.query_weight) * profile
            profile = profile / (np.linalg.norm(profile) or 1.0)
        return profile

    def generate(self, query: RecQuery, n: int) -> list[Candidate]:
        vec = self.profile_vector(query)
        if vec is None:
            return []
        if query.candidates:
            banned = _banned(query)
            vecs = self.index.vectors([c for c in query.candidates if c not in banned])
            hits = sorted(((i, float(np.dot(v, vec))) for i, v in vecs.items()), key=lambda h: (-h[1], h[0]))[:n]
        else:
            hits = self.index.query(vec, n, exclude=_banned(query))
        return [Candidate(item_id=i, score=s, sources={self.name: s}) for i, s in hits]


class KGGenerator:
    """Items sharing rare entities (people, studios, tags) with the user's liked items, with the connecting paths."""

    name = "kg"

    def __init__(self, store: GraphStore, max_entity_items: int = 200) -> None:
        self.store = store
        self.max_entity_items = max_entity_items

    def generate(self, query: RecQuery, n: int) -> list[Candidate]:
        if not query.history:
            return []
        seeds = recency_weights(query.history)
        want = max(n, 2000) if query.candidates else n
        cands = self.store.kg_candidates(seeds, set(_banned(query)), want, max_entity_items=self.max_entity_items)
        return [c.model_copy(update={"sources": {self.name: c.score}}) for c in _restrict(query, cands, n)]


class CollaborativeGenerator:
    """EASE scores from the user's whole interaction history (``query.seen``)."""

    name = "collaborative"

    def __init__(self, model: EASE | None) -> None:
        self.model = model

    def generate(self, query: RecQuery, n: int) -> list[Candidate]:
        if self.model is None or not query.seen:
            return []
        hits = self.model.score(list(query.seen), None if query.candidates else n, exclude=set(query.exclude))
        cands = [Candidate(item_id=i, score=s, sources={self.name: s}) for i, s in hits]
        return _restrict(query, cands, n)


class PopularityGenerator:
    """Most-interacted items: the cold-start floor."""

    name = "popularity"

    def __init__(self, store: GraphStore) -> None:
        self.store = store

    def generate(self, query: RecQuery, n: int) -> list[Candidate]:
        hits = self.store.popular(100_000 if query.candidates else n, exclude=set(_banned(query)))
        cands = [Candidate(item_id=i, score=float(c), sources={self.name: float(c)}) for i, c in hits]
        return _restrict(query, cands, n)


def reciprocal_rank_fusion(
    lists: Mapping[str, Sequence[Candidate]], weights: Mapping[str, float], n: int, k: int = 60
) -> list[Candidate]:
    """Fuse ranked lists: ``score = Σ_g weight_g / (k + rank_g)``; sources and KG paths are merged.

    Example:
        >>> a = [Candidate(item_id="x", score=1.0, sources={"a": 1.0})]
        >>> b = [Candidate(item_id="y", score=1.0), Candidate(item_id="x", score=0.5)]
        >>> [c.item_id for c in reciprocal_rank_fusion({"a": a, "b": b}, {"a": 1, "b": 1}, n=2)]
        ['x', 'y']
    """
    scores: dict[str, float] = {}
    sources: dict[str, dict[str, float]] = {}
    paths: dict[str, tuple[KGPath, ...]] = {}
    for name, cands in lists.items():
        w = weights.get(name, 1.0)
        for rank, c in enumerate(cands, start=1):
            scores[c.item_id] = scores.get(c.item_id, 0.0) + w / (k + rank)
            sources.setdefault(c.item_id, {}).update(c.sources or {name: c.score})
            if c.paths and c.item_id not in paths:
                paths[c.item_id] = c.paths
    order = sorted(scores, key=lambda i: (-scores[i], i))[:n]
    return [Candidate(item_id=i, score=scores[i], sources=sources[i], paths=paths.get(i, ())) for i in order]
