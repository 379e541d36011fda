"""Protocols of the stores: what the pipeline consumes. Backends live beside this module."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from knowrec.types import Candidate, Entity, Fact, Interaction, Item, KGPath

__all__ = ["Embedder", "GraphBatch", "GraphStore", "ItemIndex", "Progress", "Retraction", "WriteStats"]

Progress = Callable[[str, int], None]
"""Progress callback: ``progress(stage, n_done_since_last_call)``."""


@dataclass(frozen=True)
class Retraction:
    """A stored fact to remove, but only where it is stored with ``source``: a fact the data also states (stored first
    from the data) stays when the facts an LLM read from an item's old text are retracted."""

    fact_id: str
    source: str


@dataclass
class GraphBatch:
    """Everything one ingest writes to the graph store. Validated before it gets here.

    Entities are implied by facts (their ``tail``/``head`` ids and labels); users by interactions. ``retract`` removes
    stored facts (see :class:`Retraction`) before the batch's facts are written, in the same transaction; an entity
    left with no fact goes with its last one.
    """

    items: list[Item] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    interactions: list[Interaction] = field(default_factory=list)
    retract: list[Retraction] = field(default_factory=list)


@dataclass(frozen=True)
class WriteStats:
    """How many rows of each kind were new (not already stored) in a write, and how many facts it removed."""

    items: int = 0
    facts: int = 0
    interactions: int = 0
    retracted: int = 0


@runtime_checkable
class GraphStore(Protocol):
    """Items, entities, facts, users and interactions.

    Writes are atomic (a whole :class:`GraphBatch` or nothing) and idempotent (writing the same batch twice changes
    nothing). Interactions are keyed by ``(user_id, item_id)``; a later write replaces rating and timestamp.

    Every fact keeps its ``source`` (``dataset``: came with the data; ``llm``: extracted from an item's text) and
    ``provenance``. A backend opened with ``fact_sources`` (a collection of sources; ``None``, the default, is every
    source) answers every read that uses facts (:meth:`facts`, :meth:`item_entities`, :meth:`entity_degrees`,
    :meth:`kg_candidates`, :meth:`paths`, :meth:`paths_many`) exactly as a store holding only the facts of those
    sources would: entity degrees (rarity, the ``max_entity_items`` cut, the order of :meth:`facts`) are counted over
    those facts only. :meth:`get_facts`, :meth:`iter_entities` and :meth:`stats` are not filtered, nor are writes.
    """

    def write(self, batch: GraphBatch, progress: Progress | None = None) -> WriteStats:
        """Upsert a batch in one transaction. Facts whose head is an item id are item facts.

        A fact already stored (same id) keeps the ``source`` and ``provenance`` it was first stored with (within a
        batch, the first of its rows); only its labels are updated (a non-empty label is never replaced by an empty
        one).
        """
        ...

    def has_items(self, item_ids: Sequence[str]) -> set[str]:
        """The subset of ``item_ids`` that are stored items."""
        ...

    def items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """Stored items by id (missing ids are left out)."""
        ...

    def iter_items(self, batch_size: int = 1000) -> Iterator[list[Item]]:
        """All items, in id order, in batches.

        Raises:
            InvalidInput: ``batch_size`` is below 1.
        """
        ...

    def search_items(self, text: str, n: int = 10) -> list[Item]:
        """Items whose title contains ``text`` (case-insensitive), most popular first."""
        ...

    def history(self, user_id: str, n: int | None = None) -> list[Interaction]:
        """The user's interactions, most recent first. Unknown user: ``[]``.

        Equal timestamps keep the order they were written in (the one written last counts as the most recent); a
        rewrite with a new timestamp counts as written then, one with only a new rating keeps its place.
        """
        ...

    def interactions(self) -> Iterator[Interaction]:
        """Every interaction (for fitting collaborative models), in (user, timestamp, write order) order.

        A missing timestamp sorts first within a user (it counts as oldest), as in :meth:`history`.
        """
        ...

    def facts(self, item_ids: Sequence[str], n: int | None = None) -> dict[str, list[Fact]]:
        """Each item's own facts (where it is head or tail), most informative (rarest entity) first, ``n`` each.

        Every requested id is a key (an empty list when it has no facts). Ties: relation, then fact id. When the other
        endpoint is an item, it counts as ``df = 1``. Each fact has its stored ``source`` and ``provenance``.
        Filtered by ``fact_sources`` (the facts and the degrees).
        """
        ...

    def get_facts(self, fact_ids: Sequence[str]) -> dict[str, Fact]:
        """Facts by id (missing ids left out), with ``source`` and ``provenance``. Labels are filled from the stored
        nodes. Not filtered by ``fact_sources``: a fact asked for by id is returned whatever its source."""
        ...

    def kg_candidates(
        self,
        seed_items: Mapping[str, float],
        exclude: set[str] | frozenset[str],
        n: int,
        max_entity_items: int = 200,
    ) -> list[Candidate]:
        """Items sharing entities with the weighted seed items.

        Score of a candidate = Σ over paths (seed weight × entity rarity), rarity = ``log(1 + N_items / df)`` where
        ``df`` is the number of items linked to the entity. Entities linked to more than ``max_entity_items`` items
        are ignored. Each candidate carries its connecting paths (highest weight first; ``KGPath.extracted`` when
        either fact of a path is not from the dataset). Excluded ids never appear. Filtered by ``fact_sources``
        (paths and ``df``).
        """
        ...

    def paths(self, user_items: Sequence[str], item_id: str, n: int = 5) -> list[KGPath]:
        """Paths from any of ``user_items`` to ``item_id`` through one shared entity, highest weight first.

        ``KGPath.extracted`` says whether either fact is not from the dataset. Filtered by ``fact_sources``.
        """
        ...

    def paths_many(self, user_items: Sequence[str], item_ids: Sequence[str], n: int = 5) -> dict[str, list[KGPath]]:
        """:meth:`paths` for several items in one round trip; every requested id is a key. Filtered by
        ``fact_sources``."""
        ...

    def popular(self, n: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, int]]:
        """Most-interacted items as ``(item_id, count)``, ties by item id; excluded ids left out."""
        ...

    def item_entities(self, item_ids: Sequence[str]) -> dict[str, set[str]]:
        """Entity ids linked to each item (for diversity); every requested id is a key. Filtered by
        ``fact_sources``."""
        ...

    def entity_degrees(self, entity_ids: Sequence[str]) -> dict[str, int]:
        """How many stored items each entity is linked to (0 for an unknown id); every asked id is a key.

        With ``fact_sources``, counted over the facts of those sources only.
        """
        ...

    def iter_entities(self, batch_size: int = 5000) -> Iterator[list[Entity]]:
        """Every stored entity, in id order, in batches: its label, the sorted distinct relation names of the facts
        linking an item to it, and its degree (how many items it is linked to).

        Not filtered by ``fact_sources``: every fact counts, for the relations and the degree.

        Raises:
            InvalidInput: ``batch_size`` is below 1.
        """
        ...

    def stats(self) -> dict[str, int]:
        """Counts: ``items``, ``entities``, ``facts``, ``users``, ``interactions``; not filtered by ``fact_sources``."""
        ...

    def close(self) -> None:
        """Release connections. Safe to call twice."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-normalised vectors."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 array, each row of norm 1."""
        ...


@runtime_checkable
class ItemIndex(Protocol):
    """Item vectors in a vector store, one document per item."""

    def upsert(self, ids: Sequence[str], documents: Sequence[str], progress: Progress | None = None) -> int:
        """Embed and store documents; returns how many were written. Idempotent by id."""
        ...

    def doc_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """Hash of the stored document of each id (missing ids left out), to skip re-embedding unchanged items."""
        ...

    def snapshot(self, ids: Sequence[str]) -> object:
        """An opaque copy of the stored entries of ``ids``, for :meth:`restore`."""
        ...

    def restore(self, snapshot: object, remove: Sequence[str]) -> None:
        """Put back the entries of a :meth:`snapshot` and delete ``remove`` (undo of a failed ingest)."""
        ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by id (missing ids left out)."""
        ...

    def query(
        self, vector: np.ndarray, k: int, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[tuple[str, float]]:
        """The ``k`` nearest items as ``(item_id, cosine similarity)``, excluded ids left out."""
        ...

    def ids(self) -> set[str]: ...

    def count(self) -> int: ...
