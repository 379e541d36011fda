"""In-memory fakes of knowrec's stores, for testing code that uses knowrec: no disk, no server.

:class:`InMemoryGraphStore` is a whole :class:`~knowrec.kg_store.base.GraphStore` and :class:`InMemoryItemIndex` a
whole :class:`~knowrec.kg_store.base.ItemIndex`; both pass the contract suites the real backends pass. The graph store
ranks facts, scores candidates and ranks KG paths with the same code as the SQLite store, so it answers as that store
would on the same data.

Example:
    >>> from knowrec.kg_store.base import GraphBatch
    >>> from knowrec.types import Fact, Interaction, Item
    >>> store = InMemoryGraphStore()
    >>> store.write(GraphBatch(
    ...     items=[Item(id="1", title="Toy Story"), Item(id="2", title="Toy Story 2")],
    ...     facts=[Fact(head="1", relation="director", tail="p:lasseter", tail_label="John Lasseter"),
    ...            Fact(head="2", relation="director", tail="p:lasseter", tail_label="John Lasseter")],
    ...     interactions=[Interaction(user_id="u1", item_id="1", rating=5.0, timestamp=10)],
    ... ))
    WriteStats(items=2, facts=2, interactions=1, retracted=0)
    >>> [(c.item_id, round(c.score, 3)) for c in store.kg_candidates({"1": 1.0}, exclude=set(), n=5)]
    [('2', 0.693)]
    >>> store.paths(["1"], "2")[0].entity_label
    'John Lasseter'

    The item index embeds documents with any :class:`~knowrec.kg_store.base.Embedder`; :class:`HashEmbedder` is a
    deterministic bag-of-words one (texts that share words get similar vectors), no model needed:

    >>> index = InMemoryItemIndex(HashEmbedder())
    >>> index.upsert(["1", "2", "3"], ["toy story", "toy story two", "heat"])
    3
    >>> [item_id for item_id, _ in index.query(HashEmbedder().embed(["toy story"])[0], k=2)]
    ['1', '2']
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from knowrec.errors import StoreUnavailable
from knowrec.kg_store._common import (
    NO_LIMIT,
    PATHS_PER_CANDIDATE,
    WRITE_CHUNK,
    LinkIndex,
    SeedLink,
    TargetLink,
    check_batch_size,
    check_fact_sources,
    check_known_items,
    chunks,
    endpoint_labels,
    rank_facts,
    rank_paths,
    top_popular,
    unique,
)
from knowrec.kg_store.base import Embedder, GraphBatch, Progress, WriteStats
from knowrec.kg_store.chroma_index import doc_hash
from knowrec.types import Candidate, Entity, Fact, Interaction, Item, KGPath

__all__ = ["HashEmbedder", "InMemoryGraphStore", "InMemoryItemIndex"]


# --- graph store --------------------------------------------------------------------------------------------------


@dataclass
class _State:
    """One version of a graph. Never changed once published: a write builds the next version from a copy."""

    items: dict[str, Item] = field(default_factory=dict)
    entities: dict[str, str] = field(default_factory=dict)  # id -> label
    facts: dict[str, Fact] = field(default_factory=dict)  # as written (labels: the rule of GraphStore.write)
    users: set[str] = field(default_factory=set)
    interactions: dict[tuple[str, str], Interaction] = field(default_factory=dict)
    seq: dict[tuple[str, str], int] = field(default_factory=dict)  # write order: breaks ties of equal timestamps
    version: int = 0

    def copy(self) -> _State:
        return _State(
            dict(self.items),
            dict(self.entities),
            dict(self.facts),
            set(self.users),
            dict(self.interactions),
            dict(self.seq),
            self.version + 1,
        )


def _write_order(state: _State) -> Callable[[Interaction], int]:
    """Sort key: the order an interaction was written in (a rewrite with a new timestamp counts as written then)."""
    return lambda x: state.seq[(x.user_id, x.item_id)]


class _Graph:
    """The storage the stores of one in-memory graph share (like one SQLite file)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = _State()


class _Derived:
    """What the reads need of one version, over the facts of some sources: adjacency, entity degrees, links."""

    def __init__(self, state: _State, sources: frozenset[str] | None) -> None:
        self.state = state
        facts = [f for f in state.facts.values() if sources is None or f.source in sources]
        self.facts = facts
        self.by_head: dict[str, list[Fact]] = {}
        self.by_tail: dict[str, list[Fact]] = {}
        linked: dict[str, set[str]] = {}
        for f in facts:
            self.by_head.setdefault(f.head, []).append(f)
            self.by_tail.setdefault(f.tail, []).append(f)
            if f.head in state.items and f.tail in state.entities:
                linked.setdefault(f.tail, set()).add(f.head)
            if f.tail in state.items and f.head in state.entities:
                linked.setdefault(f.head, set()).add(f.tail)
        self.degree = {e: len(items) for e, items in linked.items()}  # entities linked to at least one item
        self.relations: dict[str, set[str]] = {}  # entity -> relations of the facts linking an item to it
        for f in facts:
            if f.head in state.items and f.tail in state.entities:
                self.relations.setdefault(f.tail, set()).add(f.relation)
            if f.tail in state.items and f.head in state.entities:
                self.relations.setdefault(f.head, set()).add(f.relation)
        self._links: LinkIndex | None = None
        self._by_user: dict[str, list[Interaction]] | None = None
        self._counts: Counter[str] | None = None
        self._lock = threading.Lock()

    def by_user(self) -> dict[str, list[Interaction]]:
        """Each user's interactions, most recent first (no timestamp: oldest; ties: the one written last first)."""
        with self._lock:
            if self._by_user is None:
                rows = sorted(self.state.interactions.values(), key=_write_order(self.state), reverse=True)
                rows.sort(key=lambda x: (x.timestamp is None, -(x.timestamp or 0)))
                by_user: dict[str, list[Interaction]] = {}
                for x in rows:
                    by_user.setdefault(x.user_id, []).append(x)
                self._by_user = by_user
            return self._by_user

    def counts(self) -> Counter[str]:
        """How many interactions each item has."""
        with self._lock:
            if self._counts is None:
                self._counts = Counter(item for _, item in self.state.interactions)
            return self._counts

    def links(self) -> LinkIndex:
        with self._lock:
            if self._links is None:
                degrees = sorted(self.degree.items())
                facts = [(f.head, f.tail) for f in self.facts]  # the scores only: this store reads its own paths
                self._links = LinkIndex(sorted(self.state.items), degrees, facts)
            return self._links

    def df(self, node: str) -> int:
        """The degree of ``node`` as :meth:`GraphStore.facts` orders by it (1 unless an entity linked to items)."""
        return self.degree.get(node, 1)


class InMemoryGraphStore:
    """A :class:`~knowrec.kg_store.base.GraphStore` held in memory: nothing on disk, nothing to start.

    Writes are atomic (a write that fails part-way, even in its ``progress`` callback, leaves the store as it was) and
    thread-safe; reads see the last complete write. Every read that ranks (facts, candidates, paths) uses the same
    code as the SQLite store, so the answers are the same as that store's on the same data. Meant for tests and
    small examples: each write copies the graph's tables.

    Args:
        fact_sources: Read only the facts whose ``source`` is one of these (``None``: every fact), as the real
            stores do (see :class:`~knowrec.kg_store.base.GraphStore`).
        same_graph_as: Another store whose graph this one shares (like a second connection to one database file),
            e.g. to read the same graph with other ``fact_sources``. ``None``: a new, empty graph.

    Raises:
        ConfigError: ``fact_sources`` is a string.

    Example:
        >>> from knowrec.types import Fact, Item
        >>> store = InMemoryGraphStore()
        >>> _ = store.write(GraphBatch(items=[Item(id="1", title="Heat")],
        ...                            facts=[Fact(head="1", relation="genre", tail="g:crime", source="llm")]))
        >>> InMemoryGraphStore(fact_sources={"dataset"}, same_graph_as=store).item_entities(["1"])
        {'1': set()}
        >>> store.item_entities(["1"])
        {'1': {'g:crime'}}
    """

    def __init__(
        self, fact_sources: Collection[str] | None = None, *, same_graph_as: InMemoryGraphStore | None = None
    ) -> None:
        self.fact_sources: frozenset[str] | None = check_fact_sources(fact_sources)
        self._graph: _Graph = _Graph() if same_graph_as is None else same_graph_as._graph
        self._closed = False
        self._lock = threading.Lock()
        self._cache: dict[frozenset[str] | None, _Derived] = {}

    def __repr__(self) -> str:
        if self.fact_sources is None:
            return "InMemoryGraphStore()"
        return f"InMemoryGraphStore(fact_sources={sorted(self.fact_sources)!r})"

    # --- state --------------------------------------------------------------------------------------------------

    def _state(self) -> _State:
        if self._closed:
            raise StoreUnavailable("in-memory graph store: the store is closed")
        return self._graph.state

    def _derived(self, every_fact: bool = False) -> _Derived:
        """The derived tables of the current version, over this store's ``fact_sources`` (or every fact)."""
        state = self._state()
        key = None if every_fact else self.fact_sources
        with self._lock:
            derived = self._cache.get(key)
            if derived is None or derived.state is not state:
                derived = _Derived(state, key)
                self._cache[key] = derived
            return derived

    def close(self) -> None:
        """Forget this store's caches; later use raises :class:`StoreUnavailable`. Safe to call twice. Other stores
        on the same graph are not affected."""
        self._closed = True
        with self._lock:
            self._cache.clear()

    # --- write --------------------------------------------------------------------------------------------------

    def write(self, batch: GraphBatch, progress: Progress | None = None) -> WriteStats:
        """Upsert a batch, all of it or nothing; returns how many items, facts and interactions were new.

        As :meth:`~knowrec.kg_store.base.GraphStore.write`: ``retract`` first (a fact goes where its stored source is
        the one named; so does an entity left with no fact); items update title, text and attributes; a stored fact
        keeps its source and provenance and takes only non-empty labels; interactions update rating and timestamp.
        ``progress(stage, n)`` is called after each chunk of 5,000 rows.

        Raises:
            InvalidInput: An interaction names an item that is neither in the batch nor stored (nothing written).
        """
        with self._graph.lock:
            state = self._state()
            batch_item_ids = {it.id for it in batch.items}
            check_known_items(
                (x for x in batch.interactions if x.item_id not in batch_item_ids),
                lambda ids: {i for i in ids if i in state.items},
            )
            new = state.copy()
            n_items = n_facts = n_interactions = n_retracted = 0
            ends: set[str] = set()
            for r in {r.fact_id: r for r in batch.retract}.values():
                gone = new.facts.get(r.fact_id)
                if gone is not None and gone.source == r.source:
                    del new.facts[r.fact_id]
                    ends.update((gone.head, gone.tail))
                    n_retracted += 1
            if ends:  # entities no fact names any more go with their last fact
                named = {node for f in new.facts.values() for node in (f.head, f.tail)}
                for node in ends - named:
                    new.entities.pop(node, None)
            for item_chunk in chunks(batch.items, WRITE_CHUNK):
                for it in item_chunk:
                    n_items += it.id not in new.items
                    new.items[it.id] = it.model_copy(deep=True)
                if progress is not None:
                    progress("items", len(item_chunk))
            for fact_chunk in chunks(batch.facts, WRITE_CHUNK):
                for f in fact_chunk:
                    old = new.facts.get(f.id)
                    if old is None:
                        new.facts[f.id] = f
                        n_facts += 1
                    elif (f.head_label and f.head_label != old.head_label) or (
                        f.tail_label and f.tail_label != old.tail_label
                    ):
                        labels = {
                            "head_label": f.head_label or old.head_label,
                            "tail_label": f.tail_label or old.tail_label,
                        }
                        new.facts[f.id] = old.model_copy(update=labels)
                if progress is not None:
                    progress("facts", len(fact_chunk))
            if batch.items or batch.facts:
                for item_id in batch_item_ids:  # an id that is now an item is no longer an entity
                    new.entities.pop(item_id, None)
                for node, label in endpoint_labels(batch.facts).items():
                    if node not in new.items and (label or node not in new.entities):
                        new.entities[node] = label
            last_seq = max(new.seq.values(), default=0)
            for x_chunk in chunks(batch.interactions, WRITE_CHUNK):
                for x in x_chunk:
                    new.users.add(x.user_id)
                    key = (x.user_id, x.item_id)
                    old_x = new.interactions.get(key)
                    n_interactions += old_x is None
                    if old_x is None or old_x.timestamp != x.timestamp:  # a new timestamp: written now
                        last_seq += 1
                        new.seq[key] = last_seq
                    new.interactions[key] = x
                if progress is not None:
                    progress("interactions", len(x_chunk))
            self._graph.state = new
        return WriteStats(items=n_items, facts=n_facts, interactions=n_interactions, retracted=n_retracted)

    # --- items --------------------------------------------------------------------------------------------------

    def has_items(self, item_ids: Sequence[str]) -> set[str]:
        """The subset of ``item_ids`` that are stored items."""
        items = self._state().items
        return {i for i in item_ids if i in items}

    def items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """Stored items by id, in the order asked (missing ids are left out)."""
        items = self._state().items
        return {i: items[i] for i in unique(item_ids) if i in items}

    def iter_items(self, batch_size: int = 1000) -> Iterator[list[Item]]:
        """All items in id order, in lists of ``batch_size`` (of the version current at the first page).

        Raises:
            InvalidInput: ``batch_size`` is below 1.
        """
        check_batch_size(batch_size)
        items = self._state().items
        for page in chunks(sorted(items), batch_size):
            yield [items[i] for i in page]

    def search_items(self, text: str, n: int = 10) -> list[Item]:
        """Items whose title contains ``text`` (case-insensitive, Unicode case folding), most interacted first."""
        if n <= 0:
            return []
        d = self._derived()
        counts = d.counts()
        q = text.casefold()
        found = [it for it in d.state.items.values() if q in it.title.casefold()]
        found.sort(key=lambda it: (-counts[it.id], it.id))
        return found[:n]

    # --- interactions -------------------------------------------------------------------------------------------

    def history(self, user_id: str, n: int | None = None) -> list[Interaction]:
        """The user's interactions, most recent first; no timestamp counts as oldest; equal timestamps: the one
        written last first (as :meth:`~knowrec.kg_store.base.GraphStore.history`)."""
        if n is not None and n <= 0:
            return []
        rows = self._derived().by_user().get(user_id, [])
        return list(rows if n is None else rows[:n])

    def interactions(self) -> Iterator[Interaction]:
        """Every interaction in (user, timestamp, write order) order; missing timestamps first within a user."""
        state = self._state()
        rows = sorted(state.interactions.values(), key=_write_order(state))
        rows.sort(key=lambda x: (x.user_id, x.timestamp is not None, x.timestamp or 0))
        yield from rows

    def popular(self, n: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, int]]:
        """Most-interacted items as ``(item_id, count)``, ties by item id ascending; excluded ids left out."""
        if n <= 0:
            return []
        counts = sorted(self._derived().counts().items(), key=lambda c: (-c[1], c[0]))
        return top_popular(counts, n, exclude)

    # --- facts --------------------------------------------------------------------------------------------------

    def facts(self, item_ids: Sequence[str], n: int | None = None) -> dict[str, list[Fact]]:
        """Each item's own facts (head or tail), rarest other endpoint first, at most ``n`` per item; see
        :meth:`~knowrec.kg_store.base.GraphStore.facts`."""
        ids = unique(item_ids)
        if n is not None and n <= 0:
            return {i: [] for i in ids}
        d = self._derived()
        rows = [(i, f.id, f.relation, d.df(f.tail)) for i in ids for f in d.by_head.get(i, ())]
        rows += [(i, f.id, f.relation, d.df(f.head)) for i in ids for f in d.by_tail.get(i, ())]
        ranked = rank_facts(rows, ids, n)
        found = self._get_facts(d.state, [fid for fids in ranked.values() for fid in fids])
        return {i: [found[fid] for fid in fids] for i, fids in ranked.items()}

    @staticmethod
    def _get_facts(state: _State, fact_ids: Sequence[str]) -> dict[str, Fact]:
        out: dict[str, Fact] = {}
        for fid in unique(fact_ids):
            f = state.facts.get(fid)
            if f is None:
                continue

            def label(node: str, stored: str) -> str:
                item = state.items.get(node)
                return (item.title if item is not None else "") or state.entities.get(node, "") or stored

            head_label, tail_label = label(f.head, f.head_label), label(f.tail, f.tail_label)
            if (head_label, tail_label) != (f.head_label, f.tail_label):
                f = f.model_copy(update={"head_label": head_label, "tail_label": tail_label})
            out[fid] = f
        return out

    def get_facts(self, fact_ids: Sequence[str]) -> dict[str, Fact]:
        """Facts by id, in the order asked (missing ids left out); labels filled from the stored nodes. Not
        filtered by ``fact_sources``."""
        return self._get_facts(self._state(), fact_ids)

    def item_entities(self, item_ids: Sequence[str]) -> dict[str, set[str]]:
        """Entity ids linked to each item by a fact (of ``fact_sources``) in either direction; every asked id is a
        key."""
        d = self._derived()
        entities = d.state.entities
        out: dict[str, set[str]] = {}
        for i in unique(item_ids):
            linked = {f.tail for f in d.by_head.get(i, ()) if f.tail in entities}
            linked.update(f.head for f in d.by_tail.get(i, ()) if f.head in entities)
            out[i] = linked
        return out

    def entity_degrees(self, entity_ids: Sequence[str]) -> dict[str, int]:
        """How many stored items each entity is linked to (over ``fact_sources``); 0 for an unknown id."""
        degree = self._derived().degree
        return {e: degree.get(e, 0) for e in unique(entity_ids)}

    def iter_entities(self, batch_size: int = 5000) -> Iterator[list[Entity]]:
        """Every stored entity in id order, in lists of ``batch_size``, with its label, the relations of the facts
        linking an item to it and its degree. Not filtered by ``fact_sources``.

        Raises:
            InvalidInput: ``batch_size`` is below 1.
        """
        check_batch_size(batch_size)
        d = self._derived(every_fact=True)
        entities = d.state.entities
        for page in chunks(sorted(entities), batch_size):
            yield [
                Entity(
                    id=e,
                    label=entities[e],
                    relations=tuple(sorted(d.relations.get(e, ()))),
                    degree=d.degree.get(e, 0),
                )
                for e in page
            ]

    # --- knowledge-graph retrieval ------------------------------------------------------------------------------

    @staticmethod
    def _paths(
        d: _Derived, seeds: Mapping[str, float], targets: Sequence[str], per_target: int, max_degree: int
    ) -> dict[str, list[KGPath]]:
        entities = d.state.entities
        seed_links = [
            SeedLink(s, other, entities.get(other, ""), f.id, f.relation, f.source, d.degree[other])
            for s in seeds
            for f, other in [*((f, f.tail) for f in d.by_head.get(s, ())), *((f, f.head) for f in d.by_tail.get(s, ()))]
            if other in d.degree
        ]
        target_links = [
            TargetLink(t, other, f.id, f.relation, f.source)
            for t in targets
            for f, other in [*((f, f.tail) for f in d.by_head.get(t, ())), *((f, f.head) for f in d.by_tail.get(t, ()))]
        ]
        return rank_paths(
            seeds,
            seed_links,
            target_links,
            targets,
            n_items=len(d.state.items),
            per_target=per_target,
            max_degree=max_degree,
        )

    def kg_candidates(
        self,
        seed_items: Mapping[str, float],
        exclude: set[str] | frozenset[str],
        n: int,
        max_entity_items: int = 200,
    ) -> list[Candidate]:
        """Items sharing entities with the weighted seed items, best first (ties by item id), each with its 5
        heaviest paths; see :meth:`~knowrec.kg_store.base.GraphStore.kg_candidates`."""
        if not seed_items or n <= 0 or max_entity_items < 1:
            return []
        d = self._derived()
        scores = d.links().scores(seed_items, exclude, n, max_entity_items)
        seeds = {k: float(v) for k, v in seed_items.items()}
        paths = self._paths(d, seeds, [c for c, _ in scores], PATHS_PER_CANDIDATE, max_entity_items)
        return [
            Candidate(item_id=cand, score=score, sources={"kg": score}, paths=tuple(paths[cand]))
            for cand, score in scores
        ]

    def paths(self, user_items: Sequence[str], item_id: str, n: int = 5) -> list[KGPath]:
        """Paths ``user item → shared entity → item_id``, highest weight (rarity) first, at most ``n``."""
        return self.paths_many(user_items, [item_id], n)[item_id]

    def paths_many(self, user_items: Sequence[str], item_ids: Sequence[str], n: int = 5) -> dict[str, list[KGPath]]:
        """:meth:`paths` for each of ``item_ids`` (a seed is never its own path); every asked id is a key."""
        ids = unique(item_ids)
        seeds = unique(user_items)
        if not ids or not seeds or n <= 0:
            return {i: [] for i in ids}
        return self._paths(self._derived(), dict.fromkeys(seeds, 1.0), ids, n, NO_LIMIT)

    # --- counts -------------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counts of ``items``, ``entities``, ``facts``, ``users`` and ``interactions`` (not filtered)."""
        s = self._state()
        return {
            "items": len(s.items),
            "entities": len(s.entities),
            "facts": len(s.facts),
            "users": len(s.users),
            "interactions": len(s.interactions),
        }


# --- item index ---------------------------------------------------------------------------------------------------


class HashEmbedder:
    """A deterministic bag-of-words :class:`~knowrec.kg_store.base.Embedder`: each word hashes to one of ``dim``
    dimensions, so texts that share words get similar unit vectors. For tests; it knows no meaning."""

    dim = 64
    name = "hash-embedder"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, text in enumerate(texts):
            for word in text.lower().replace(".", " ").replace(",", " ").split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[r, h % self.dim] += 1.0
            norm = np.linalg.norm(out[r])
            out[r] = out[r] / norm if norm else out[r]
            if not norm:
                out[r, 0] = 1.0
        return out


class InMemoryItemIndex:
    """An :class:`~knowrec.kg_store.base.ItemIndex` held in memory: documents embedded with ``embedder``, nearest
    items by cosine similarity (exact, over every stored vector).

    Thread-safe. Ties of similarity (to 6 decimals, as the Chroma index) are broken by item id.

    Args:
        embedder: turns documents into vectors (any :class:`~knowrec.kg_store.base.Embedder`).
        batch_size: documents embedded per call of ``embedder.embed`` (``progress`` is reported after each).
    """

    def __init__(self, embedder: Embedder, batch_size: int = 512) -> None:
        check_batch_size(batch_size)
        self.embedder = embedder
        self.batch_size = batch_size
        self._docs: dict[str, tuple[str, np.ndarray]] = {}  # id -> (document, read-only float32 vector)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InMemoryItemIndex({getattr(self.embedder, 'name', type(self.embedder).__name__)!r})"

    def upsert(self, ids: Sequence[str], documents: Sequence[str], progress: Progress | None = None) -> int:
        """Embed and store documents (a stored id is replaced); returns how many were written."""
        written = 0
        for start in range(0, len(ids), self.batch_size):
            chunk_ids = list(ids[start : start + self.batch_size])
            chunk_docs = list(documents[start : start + self.batch_size])
            vecs = np.asarray(self.embedder.embed(chunk_docs), dtype=np.float32)
            with self._lock:
                for item_id, doc, vec in zip(chunk_ids, chunk_docs, vecs, strict=True):
                    vec = vec.copy()
                    vec.flags.writeable = False
                    self._docs[item_id] = (doc, vec)
            written += len(chunk_ids)
            if progress is not None:
                progress("index", len(chunk_ids))
        return written

    def doc_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """:func:`~knowrec.kg_store.chroma_index.doc_hash` of each stored id's document (missing ids left out)."""
        with self._lock:
            return {i: doc_hash(self._docs[i][0]) for i in ids if i in self._docs}

    def snapshot(self, ids: Sequence[str]) -> object:
        """A copy of the stored entries of ``ids`` (``None`` when ``ids`` is empty), for :meth:`restore`."""
        if not ids:
            return None
        with self._lock:
            return {i: self._docs[i] for i in ids if i in self._docs}

    def restore(self, snapshot: object, remove: Sequence[str]) -> None:
        """Delete ``remove``, then put back the entries of a :meth:`snapshot`."""
        self.delete(remove)
        if isinstance(snapshot, dict):
            with self._lock:
                self._docs.update(snapshot)

    def delete(self, ids: Sequence[str]) -> None:
        """Forget ``ids`` (unknown ids are ignored)."""
        with self._lock:
            for i in ids:
                self._docs.pop(i, None)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by id, in the order asked (missing ids left out); read-only float32 arrays."""
        with self._lock:
            return {i: self._docs[i][1] for i in ids if i in self._docs}

    def query(
        self, vector: np.ndarray, k: int, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[tuple[str, float]]:
        """The ``k`` items most similar to ``vector`` as ``(item_id, cosine similarity)``; excluded ids left out."""
        if k <= 0:
            return []
        with self._lock:
            ids = [i for i in self._docs if i not in exclude]
            if not ids:
                return []
            matrix = np.stack([self._docs[i][1] for i in ids]).astype(np.float64)
        q = np.asarray(vector, dtype=np.float64).ravel()
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(q)
        sims = np.divide(matrix @ q, norms, out=np.zeros(len(ids)), where=norms > 0)
        hits = sorted(zip(ids, sims.tolist(), strict=True), key=lambda h: (-round(h[1], 6), h[0]))
        return hits[:k]

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._docs)

    def count(self) -> int:
        with self._lock:
            return len(self._docs)
