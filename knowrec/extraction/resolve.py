"""Entity resolution: an extracted object becomes a stored entity when it is the same thing, else a new one.

In order: the normalised label of a stored entity (``"michael mann (director)"`` → ``Michael Mann``), an alias (the
schema's ``[aliases]``, and the name in an entity id such as ``dbr:Michael_Mann``), then the most similar label by
embedding cosine, at or above a threshold (chosen on data). A candidate entity must be of a compatible type: its
stored relations must allow one of the object's types, so a person and a company of the same name stay apart.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from knowrec.extraction.schema import ExtractionSchema
from knowrec.extraction.text import normalise
from knowrec.kg_store.base import Embedder
from knowrec.types import Entity

__all__ = ["ATTRIBUTE_TYPES", "EntityResolver", "Resolution", "new_entity_id"]

ATTRIBUTE_TYPES = frozenset({"genre", "year"})
"""Types of stored entities that describe an item rather than name someone or something (``genre:Drama``)."""


@dataclass(frozen=True)
class Resolution:
    """Where an object went: a stored entity (``method`` label, alias or embedding) or a new one (``new``)."""

    entity_id: str
    label: str
    method: str
    score: float = 1.0


def new_entity_id(label: str, types: tuple[str, ...]) -> str:
    """The id of an entity first seen in text: stable for the same name and type (``kx:person/michael_mann``).

    Example:
        >>> new_entity_id("Michael Mann (director)", ("person",))
        'kx:person/michael_mann'
    """
    kind = types[0] if types else "thing"
    return f"kx:{kind}/{normalise(label).replace(' ', '_')}"


def _id_name(entity_id: str) -> str:
    """The name inside an id (``dbr:Michael_Mann`` → ``Michael Mann``), or ``""``."""
    local = re.split(r"[:/#]", entity_id)[-1]
    return local.replace("_", " ") if local and not local.isdigit() else ""


@dataclass
class _Known:
    id: str
    label: str
    types: frozenset[str]


class EntityResolver:
    """Resolves objects against the stored entities (and those it created itself during a run).

    Args:
        entities: every stored entity (``GraphStore.iter_entities``).
        schema: gives the types of stored relations and aliases.
        embedder: for the similarity step; ``None`` skips it.
        threshold: lowest cosine that merges.
    """

    def __init__(
        self,
        entities: Iterable[Entity],
        schema: ExtractionSchema,
        embedder: Embedder | None = None,
        threshold: float = 0.9,
    ) -> None:
        self.schema = schema
        self.embedder = embedder
        self.threshold = threshold
        self._known: dict[str, _Known] = {}
        self._by_label: dict[str, list[str]] = defaultdict(list)
        self._by_alias: dict[str, list[str]] = defaultdict(list)
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._vector_ids: list[str] = []
        self._unindexed: list[str] = []
        for e in entities:
            types = frozenset(t for r in e.relations for t in schema.types_of(r))
            self._add(_Known(e.id, e.label or _id_name(e.id) or e.id, types))
        for entity_id, names in schema.aliases.items():
            for name in names:
                self._by_alias[normalise(name)].append(entity_id)

    def _add(self, known: _Known) -> None:
        self._known[known.id] = known
        self._by_label[normalise(known.label)].append(known.id)
        name = _id_name(known.id)
        if name and normalise(name) != normalise(known.label):
            self._by_alias[normalise(name)].append(known.id)
        self._unindexed.append(known.id)  # embedded with the next similarity lookup

    def _embed(self, labels: list[str]) -> np.ndarray:
        assert self.embedder is not None
        return np.asarray(self.embedder.embed(labels), dtype=np.float32)

    @staticmethod
    def _compatible(known: _Known, types: tuple[str, ...]) -> bool:
        """An entity of unknown type (a relation no schema describes) matches a name only by label or alias."""
        return bool(known.types & set(types))

    def _pick(self, ids: list[str], types: tuple[str, ...]) -> _Known | None:
        fits = [self._known[i] for i in ids if i in self._known and self._compatible(self._known[i], types)]
        return min(fits, key=lambda k: k.id) if fits else None

    def is_attribute(self, label: str) -> bool:
        """Whether ``label`` is the name of a stored genre or year (never the object of an extracted relation, even
        when a tag of the same words exists)."""
        ids = self._by_label.get(normalise(label), [])
        return any(i in self._known and self._known[i].types and self._known[i].types <= ATTRIBUTE_TYPES for i in ids)

    def resolve(self, label: str, types: tuple[str, ...]) -> Resolution:
        """The entity ``label`` (an object of one of ``types``) refers to; a new entity is remembered for later
        objects of the run (so one name extracted from two items becomes one entity)."""
        key = normalise(label)
        for method, table in (("label", self._by_label), ("alias", self._by_alias)):
            hit = self._pick(table.get(key, []), types)
            if hit is not None:
                return Resolution(hit.id, hit.label, method)
        if self.embedder is not None and self._known:
            hit_sim = self._nearest(label, types)
            if hit_sim is not None:
                return hit_sim
        entity_id = new_entity_id(label, types)
        clean = re.sub(r"\s*\([^)]*\)\s*$", "", " ".join(label.split()))
        if entity_id not in self._known:
            self._add(_Known(entity_id, clean, frozenset(types)))
        return Resolution(entity_id, self._known[entity_id].label, "new")

    def _index(self) -> np.ndarray:
        """Label vectors of every known entity (embedded on first need, in batches; new ones joined later)."""
        if self._unindexed:
            added = self._embed([self._known[i].label for i in self._unindexed])
            self._vectors = added if not len(self._vector_ids) else np.vstack([self._vectors, added])
            self._vector_ids.extend(self._unindexed)
            self._unindexed = []
        return self._vectors

    def _nearest(self, label: str, types: tuple[str, ...]) -> Resolution | None:
        sims = self._index() @ self._embed([label])[0]
        for k in np.argsort(-sims)[:20]:
            if sims[k] < self.threshold:
                break
            known = self._known[self._vector_ids[k]]
            if self._compatible(known, types):
                return Resolution(known.id, known.label, "embedding", float(sims[k]))
        return None

    def similarity_candidates(self, label: str, types: tuple[str, ...], n: int = 1) -> list[tuple[str, float]]:
        """The ``n`` most similar compatible entities with their cosine (for choosing the threshold on data)."""
        if self.embedder is None or not self._known:
            return []
        sims = self._index() @ self._embed([label])[0]
        out: list[tuple[str, float]] = []
        for k in np.argsort(-sims):
            known = self._known[self._vector_ids[k]]
            if self._compatible(known, types) and normalise(known.label) != normalise(label):
                out.append((known.id, float(sims[k])))
                if len(out) >= n:
                    break
        return out
