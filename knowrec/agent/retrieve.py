"""Candidate generators (vector, knowledge graph, collaborative, popularity) and their fusion."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from knowrec.agent.collaborative import EASE
from knowrec.kg_store.base import Embedder, GraphStore, ItemIndex
from knowrec.types import Candidate, RecQuery

if TYPE_CHECKING:
    from knowrec.agent.fusion import ItemStats
    from knowrec.fitting.sequential import SequentialModel

__all__ = [
    "CandidateGenerator",
    "CollaborativeGenerator",
    "KGGenerator",
    "PopularityGenerator",
    "SequentialGenerator",
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
        self._last: tuple[tuple[str, ...], np.ndarray | None] | None = None

    def history_vector(self, query: RecQuery) -> np.ndarray | None:
        """The recency-weighted, normalised mean of the history's item vectors (``None``: no history).

        The last history's vector is remembered: the fusion features ask again for the same query."""
        if not query.history:
            return None
        last = self._last
        if last is not None and last[0] == query.history:
            return last[1]
        weights = recency_weights(query.history)
        vecs = self.index.vectors(list(weights))
        out = None
        if vecs:
            summed = np.sum([weights[i] * vecs[i] for i in weights if i in vecs], axis=0)  # history order
            out = np.asarray(summed / (np.linalg.norm(summed) or 1.0))
        self._last = (tuple(query.history), out)
        return out

    def query_vector(self, query: RecQuery) -> np.ndarray | None:
        """The embedding of the query text (``None``: no query)."""
        return self.embedder.embed([query.query])[0] if query.query else None

    def profile_vector(self, query: RecQuery) -> np.ndarray | None:
        """The vector searched with, or ``None`` when there is neither history nor query text."""
        profile = self.history_vector(query)
        if query.query:
            qv = self.query_vector(query)
            assert qv is not None
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
        # an orthogonal (or opposite) item is not similar at all; dropping it also avoids arbitrary ties at zero
        return [Candidate(item_id=i, score=s, sources={self.name: s}) for i, s in hits if s > 1e-9]


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


def _top(
    scores: np.ndarray,
    items: Sequence[str],
    query: RecQuery,
    n: int,
    name: str,
    order: np.ndarray | None = None,
) -> list[Candidate]:
    """The ``n`` best-scored catalogue items that are neither seen nor excluded (and among ``query.candidates``);
    ties by catalogue position. ``order`` is a precomputed best-first order of ``scores``."""
    banned = _banned(query)
    allowed = set(query.candidates) if query.candidates else None
    if order is None:
        want = n + len(banned)
        if allowed is None and want < len(scores) // 4:
            part = np.argpartition(-scores, want)[:want]
            order = part[np.lexsort((part, -scores[part]))]
        else:
            order = np.argsort(-scores, kind="stable")
    out: list[Candidate] = []
    for j in order:
        item = items[j]
        if item in banned or (allowed is not None and item not in allowed):
            continue
        out.append(Candidate(item_id=item, score=float(scores[j]), sources={name: float(scores[j])}))
        if len(out) >= n:
            break
    return out


class SequentialGenerator:
    """The next items a SASRec predicts after the user's whole sequence (read from the store at every call, so a new
    interaction changes the next answer without refitting)."""

    name = "sequential"

    def __init__(self, model: SequentialModel | None) -> None:
        self.model = model
        self._last: tuple[tuple[str, ...], np.ndarray] | None = None

    def scores(self, query: RecQuery) -> np.ndarray | None:
        """Scores of every item of ``model.items`` (``None``: no model or no known item in the sequence).

        The last sequence's scores are remembered (read-only): the fusion features ask again for the same query."""
        if self.model is None or not self.model.tokens(query.sequence):
            return None
        last = self._last
        if last is not None and last[0] == query.sequence:
            return last[1]
        scores = self.model.score(query.sequence)
        scores.flags.writeable = False
        self._last = (tuple(query.sequence), scores)
        return scores

    def generate(self, query: RecQuery, n: int) -> list[Candidate]:
        scores = self.scores(query)
        if scores is None or self.model is None:
            return []
        return _top(scores, self.model.items, query, n, self.name)


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
    """Most-interacted items: the cold-start floor (counts from the fitted item statistics when there are some)."""

    name = "popularity"

    def __init__(self, store: GraphStore, stats: ItemStats | None = None) -> None:
        self.store = store
        self.stats = stats

    def generate(self, query: RecQuery, n: int) -> list[Candidate]:
        if self.stats is not None:
            return _top(self.stats.counts, self.stats.items, query, n, self.name, order=self.stats.pop_order)
        hits = self.store.popular(100_000 if query.candidates else n, exclude=set(_banned(query)))
        cands = [Candidate(item_id=i, score=float(c), sources={self.name: float(c)}) for i, c in hits]
        return _restrict(query, cands, n)


def reciprocal_rank_fusion(
    lists: Mapping[str, Sequence[Candidate]], weights: Mapping[str, float], n: int, k: int = 60
) -> list[Candidate]:
    """Fuse ranked lists: ``score = Σ_g weight_g / (k + rank_g)``; sources, ranks and KG paths are merged.

    Example:
        >>> a = [Candidate(item_id="x", score=1.0, sources={"a": 1.0})]
        >>> b = [Candidate(item_id="y", score=1.0), Candidate(item_id="x", score=0.5)]
        >>> [c.item_id for c in reciprocal_rank_fusion({"a": a, "b": b}, {"a": 1, "b": 1}, n=2)]
        ['x', 'y']
    """
    from knowrec.agent.fusion import build_candidate_list, rrf_order

    return rrf_order(build_candidate_list(lists), weights, k)[:n]
