"""What every graph store shares: row helpers, input checks, paging, constants, and the ranking of KG paths.

A backend (:mod:`~knowrec.kg_store.sqlite`, :mod:`~knowrec.kg_store.neo4j`, :class:`knowrec.testing.InMemoryGraphStore`)
only reads raw rows: the facts linking the seed items to entities (:class:`SeedLink`, with each entity's degree) and
the facts linking the target items to those entities (:class:`TargetLink`). :func:`rank_paths` turns them into the
paths the protocol returns: it weighs, orders, breaks ties and cuts, the same way for every backend. The order of
each item's own facts is :func:`rank_facts`'s; candidate scores over an in-memory copy of the item–entity links are
:class:`LinkIndex`'s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any, NamedTuple, TypeVar, cast

import numpy as np
import scipy.sparse as sp

from knowrec.errors import ConfigError, InvalidInput
from knowrec.types import DATASET_SOURCE, Fact, Interaction, Item, KGPath, Provenance

__all__ = [
    "NO_LIMIT",
    "PATHS_PER_CANDIDATE",
    "WRITE_CHUNK",
    "LinkIndex",
    "SeedLink",
    "TargetLink",
    "attributes_json",
    "check_batch_size",
    "check_fact_sources",
    "check_known_items",
    "chunks",
    "endpoint_labels",
    "entity_weights",
    "fact_from_row",
    "interaction_from_row",
    "item_from_row",
    "keyset_pages",
    "one_line",
    "provenance_json",
    "rank_facts",
    "rank_paths",
    "rarity",
    "top_popular",
    "unique",
]

_T = TypeVar("_T")
_K = TypeVar("_K")

WRITE_CHUNK = 5000
"""Rows per write statement; ``progress`` is reported after each chunk."""

PATHS_PER_CANDIDATE = 5
"""Paths kept on each candidate of ``kg_candidates``."""

NO_LIMIT = 2**62
"""A degree or row limit that is no limit (an integer every backend takes as a parameter)."""


# --- small helpers ----------------------------------------------------------------------------------------------


def chunks(seq: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """``seq`` in consecutive slices of at most ``size``."""
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def unique(ids: Iterable[str]) -> list[str]:
    """``ids`` without repeats, in first-seen order."""
    return list(dict.fromkeys(ids))


def one_line(text: str) -> str:
    """``text`` with every run of whitespace made one space (for log lines)."""
    return " ".join(text.split())


def rarity(n_items: int | None, df: int | None) -> float:
    """``log(1 + N_items / df)``: how telling an entity linked to ``df`` of ``n_items`` items is (0 for a missing or
    non-positive ``df``).

    Example:
        >>> round(rarity(6, 2), 6)
        1.386294
        >>> rarity(6, 0)
        0.0
    """
    if not df or df <= 0 or not n_items:
        return 0.0
    return math.log1p(n_items / df)


# --- rows <-> models ----------------------------------------------------------------------------------------------


def attributes_json(item: Item) -> str:
    """An item's attributes as the compact JSON the stores keep."""
    return json.dumps(item.attributes, ensure_ascii=False, separators=(",", ":"))


def provenance_json(fact: Fact) -> str:
    """The fact's provenance as compact JSON, ``''`` when it has none."""
    return "" if fact.provenance is None else fact.provenance.model_dump_json()


def item_from_row(row: Sequence[Any]) -> Item:
    """``(id, title, text, attributes JSON)`` as an :class:`Item`."""
    return Item(id=row[0], title=row[1], text=row[2] or "", attributes=json.loads(row[3] or "{}"))


def interaction_from_row(row: Sequence[Any]) -> Interaction:
    """``(user_id, item_id, rating, timestamp)`` as an :class:`Interaction`."""
    rating = None if row[2] is None else float(row[2])
    ts = None if row[3] is None else int(row[3])
    return Interaction(user_id=row[0], item_id=row[1], rating=rating, timestamp=ts)


def fact_from_row(row: Sequence[Any]) -> Fact:
    """``(id, head, relation, tail, head_label, tail_label, source, provenance JSON)`` as a :class:`Fact`."""
    return Fact(
        id=row[0],
        head=row[1],
        relation=row[2],
        tail=row[3],
        head_label=row[4] or "",
        tail_label=row[5] or "",
        source=row[6],
        provenance=Provenance.model_validate_json(row[7]) if row[7] else None,
    )


# --- input checks -------------------------------------------------------------------------------------------------


def check_fact_sources(fact_sources: Collection[str] | None) -> frozenset[str] | None:
    """The ``fact_sources`` a store was opened with, as a set (``None``: every source).

    Raises:
        ConfigError: ``fact_sources`` is a string (a collection of names is meant; a string would be its letters).
    """
    if isinstance(fact_sources, str):
        raise ConfigError(f"fact_sources must be a collection of source names, not the string {fact_sources!r}")
    return None if fact_sources is None else frozenset(fact_sources)


def check_batch_size(batch_size: int) -> None:
    """Raises :class:`InvalidInput` (field ``batch_size``) when ``batch_size`` is below 1."""
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, not {batch_size}", field="batch_size")


def check_known_items(interactions: Iterable[Interaction], known: Callable[[list[str]], Collection[str]]) -> None:
    """Check that every interaction names a stored item, before anything is written.

    Args:
        interactions: the interactions of a batch, less those naming an item of the same batch.
        known: which of the given ids are stored items (called once, only when there are ids to check).

    Raises:
        InvalidInput: some ids are not stored items; the message shows the first five (sorted), field ``item_id``.
    """
    wanted = unique(x.item_id for x in interactions)
    if not wanted:
        return
    missing = sorted(set(wanted) - set(known(wanted)))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise InvalidInput(f"{len(missing)} interacted item id(s) are not stored items: {shown}", field="item_id")


def endpoint_labels(facts: Iterable[Fact]) -> dict[str, str]:
    """Every endpoint of ``facts`` with its label: the last non-empty one given, else ``''``."""
    labels: dict[str, str] = {}
    for f in facts:
        for node, label in ((f.head, f.head_label), (f.tail, f.tail_label)):
            if label or node not in labels:
                labels[node] = label
    return labels


# --- paging and popularity ----------------------------------------------------------------------------------------


def keyset_pages(
    read_page: Callable[[_K | None], _T],
    page_size: int,
    last_key: Callable[[_T], _K],
    size: Callable[[_T], int] | None = None,
) -> Iterator[_T]:
    """The pages of a listing in key order: ``read_page(None)``, then ``read_page(last_key(page before))``, ….

    Stops after an empty page (not yielded) or one of fewer than ``page_size`` rows (``size(page)``, by default
    ``len(page)``).

    Example:
        >>> rows = ["a", "b", "c", "d", "e"]
        >>> list(keyset_pages(lambda last: [r for r in rows if last is None or r > last][:2], 2, lambda p: p[-1]))
        [['a', 'b'], ['c', 'd'], ['e']]
    """
    last: _K | None = None
    while True:
        page = read_page(last)
        n = len(cast(Sized, page)) if size is None else size(page)
        if not n:
            return
        yield page
        if n < page_size:
            return
        last = last_key(page)


def top_popular(counts: Iterable[tuple[str, int]], n: int, exclude: set[str] | frozenset[str]) -> list[tuple[str, int]]:
    """The first ``n`` of ``counts`` (already in order) whose item is not excluded."""
    out: list[tuple[str, int]] = []
    if n <= 0:
        return out
    for item_id, count in counts:
        if item_id in exclude:
            continue
        out.append((item_id, count))
        if len(out) >= n:
            break
    return out


# --- ranking ------------------------------------------------------------------------------------------------------


def rank_facts(rows: Iterable[Sequence[Any]], item_ids: Sequence[str], n: int | None) -> dict[str, list[str]]:
    """The fact ids of each item, most informative first: the order of :meth:`GraphStore.facts`.

    Args:
        rows: ``(item id, fact id, relation, df)`` for each fact touching an asked item, ``df`` being the degree of
            its other endpoint (1 when that is not an entity linked to an item). Repeated rows count once.
        item_ids: the asked ids; each is a key of the answer.
        n: at most this many per item (``None``: all).

    Order: ``df`` ascending, then relation, then fact id.
    """
    found: dict[str, set[tuple[int, str, str]]] = {i: set() for i in item_ids}
    for item_id, fid, relation, df in rows:
        found[item_id].add((int(df), relation, fid))
    return {i: [t[2] for t in sorted(links)][:n] for i, links in found.items()}


class SeedLink(NamedTuple):
    """A fact linking a seed (a history item) to an entity, as a backend reads it."""

    seed: str
    entity: str
    label: str
    """The entity's stored label (``''``: none; the path then shows the entity id)."""
    fact: str
    relation: str
    source: str
    degree: int
    """How many items the entity is linked to, over the facts the store reads (its ``fact_sources``)."""


class TargetLink(NamedTuple):
    """A fact linking a target (a candidate item) to an entity, as a backend reads it."""

    target: str
    entity: str
    fact: str
    relation: str
    source: str


def rank_paths(
    seed_weights: Mapping[str, float],
    seed_links: Iterable[SeedLink],
    target_links: Iterable[TargetLink],
    targets: Sequence[str],
    *,
    n_items: int,
    per_target: int,
    max_degree: int = NO_LIMIT,
) -> dict[str, list[KGPath]]:
    """The heaviest paths ``seed —fact→ entity ←fact— target`` of each target: the KG path ranking of every store.

    A path's weight is its seed's weight × :func:`rarity` of the entity (``n_items`` items in the store). Only
    entities linked to between 1 and ``max_degree`` items count; a path never starts at its own target. Paths are
    ordered by weight (heaviest first), then seed id, entity id, seed fact id and target fact id, and cut at
    ``per_target`` per target. ``KGPath.extracted`` says whether either fact's source is not the dataset's.

    Args:
        seed_weights: the weight of each seed (every seed of ``seed_links`` is a key).
        seed_links: the seeds' facts to entities, with the entities' labels and degrees (any order; links to
            entities outside the degree range may be left out by the backend or not).
        target_links: the targets' facts to entities (any order; links to entities no seed reaches, or of
            targets not asked, are ignored).
        targets: the target ids; every one is a key of the answer (an empty list when no path reaches it).
        n_items: how many items the store holds.
        per_target: at most this many paths per target.
        max_degree: entities linked to more items are left out.

    Example:
        >>> seeds = [SeedLink("m1", "p:d", "Dir", "F1", "director", "dataset", 2)]
        >>> targets = [TargetLink("m2", "p:d", "F2", "director", "llm")]
        >>> (p,) = rank_paths({"m1": 1.0}, seeds, targets, ["m2"], n_items=6, per_target=5)["m2"]
        >>> (p.source_item, p.entity_label, round(p.weight, 6), p.extracted)
        ('m1', 'Dir', 1.386294, True)
    """
    out: dict[str, list[KGPath]] = {t: [] for t in targets}
    if per_target <= 0:
        return out
    # Per entity: its seed links as (-weight, seed, seed fact, relation, extracted, label), heaviest first.
    by_entity: dict[str, list[tuple[float, str, str, str, bool, str]]] = {}
    for s in seed_links:
        if not 1 <= s.degree <= max_degree:
            continue
        w = seed_weights[s.seed] * rarity(n_items, s.degree)
        by_entity.setdefault(s.entity, []).append(
            (-w, s.seed, s.fact, s.relation, s.source != DATASET_SOURCE, s.label or s.entity)
        )
    if not by_entity:
        return out
    for links in by_entity.values():
        links.sort(key=lambda x: x[:3])
    # Per target and entity: the target's facts as (fact, relation, extracted).
    by_target: dict[str, dict[str, list[tuple[str, str, bool]]]] = {}
    for t in target_links:
        if t.entity in by_entity and t.target in out:
            by_target.setdefault(t.target, {}).setdefault(t.entity, []).append(
                (t.fact, t.relation, t.source != DATASET_SOURCE)
            )
    for target, entities in by_target.items():
        # Each entity's paths come in the final order (its seed links heaviest first, then target fact), so the
        # best ``per_target`` of all are among the first ``per_target`` of each entity.
        found: list[tuple[float, str, str, str, str, str, str, str, bool]] = []
        for entity, tlinks in entities.items():
            tlinks.sort()
            taken = 0
            for neg_w, seed, sfact, srel, sx, label in by_entity[entity]:
                if seed == target:
                    continue
                for tfact, trel, tx in tlinks:
                    found.append((neg_w, seed, entity, sfact, tfact, srel, trel, label, sx or tx))
                    taken += 1
                    if taken >= per_target:
                        break
                if taken >= per_target:
                    break
        found.sort(key=lambda p: p[:5])
        out[target] = [
            KGPath(
                source_item=seed,
                entity=entity,
                entity_label=label,
                source_fact=sfact,
                target_fact=tfact,
                source_relation=srel,
                target_relation=trel,
                weight=-neg_w,
                extracted=extracted,
            )
            for neg_w, seed, entity, sfact, tfact, srel, trel, label, extracted in found[:per_target]
        ]
    return out


def entity_weights(
    seed_weights: Mapping[str, float], seed_links: Iterable[SeedLink], *, n_items: int, max_degree: int
) -> dict[str, float]:
    """Σ over each entity's seed links (degree in ``[1, max_degree]``) of seed weight × rarity, in link order: what
    one fact linking a candidate to the entity adds to the candidate's ``kg_candidates`` score."""
    out: dict[str, float] = {}
    for s in seed_links:
        if 1 <= s.degree <= max_degree:
            out[s.entity] = out.get(s.entity, 0.0) + seed_weights[s.seed] * rarity(n_items, s.degree)
    return out


class LinkIndex:
    """Every fact between an item and an entity, in memory: sparse matrices for ``kg_candidates``' scores (in SQL,
    aggregating the ~15k candidate links of 50 seeds took 20 ms at 1M facts; here ~2 ms), and each link's fact for
    the paths (:meth:`seed_links`, :meth:`target_links`; read from SQL they took ~13 ms per recommendation at 1M
    facts on a 2-core machine).

    Built in a few seconds per million facts, ~70 MB per million (the fact ids are kept as one UTF-8 buffer); a
    store builds one when first needed after a write of items or facts.

    Args:
        items: every stored item id, in id order (so that position order is id order: the ties of the scores).
        degrees: ``(entity, df)`` or ``(entity, label, df)`` of every entity linked to at least one item, in entity
            id order (no label: ``''``; the paths then show the entity id).
        facts: ``(head, tail)`` or ``(head, tail, fact id, relation, source)`` of every fact, in any order; those
            linking an item (either end) to an entity of ``degrees`` are kept, one link per fact and direction.
            Without the fact's fields there are no paths (:meth:`seed_links` answers nothing).
    """

    def __init__(self, items: list[str], degrees: Sequence[Sequence[Any]], facts: Iterable[Sequence[str]]) -> None:
        self.items = items
        self.pos = pos = {item: k for k, item in enumerate(items)}
        self.entities = [str(d[0]) for d in degrees]
        self.labels = [str(d[1] or "") if len(d) == 3 else "" for d in degrees]
        epos = {e: k for k, e in enumerate(self.entities)}
        rows: list[int] = []
        cols: list[int] = []
        ids: list[str] = []  # per link: its fact's id, relation and source (codes)
        rel: list[int] = []
        src: list[int] = []
        rel_code: dict[str, int] = {}
        src_code: dict[str, int] = {}
        self.has_facts = True
        for fact in facts:
            head, tail = fact[0], fact[1]
            for item, entity in ((head, tail), (tail, head)):
                c = epos.get(entity)
                if c is None:
                    continue
                k = pos.get(item)
                if k is None:
                    continue
                rows.append(k)
                cols.append(c)
                if len(fact) < 5:
                    self.has_facts = False
                elif self.has_facts:
                    ids.append(fact[2])
                    rel.append(rel_code.setdefault(fact[3], len(rel_code)))
                    src.append(src_code.setdefault(fact[4], len(src_code)))
        df = np.array([d[-1] for d in degrees], dtype=np.float64)
        self.df = df
        self._degree = [int(d[-1]) for d in degrees]
        m = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(items), len(df)))
        self.by_item = m  # items × entities: how many facts link them
        self.by_entity = m.T.tocsr()
        with np.errstate(divide="ignore"):
            self.rarity = np.where(df > 0, np.log1p(len(items) / np.maximum(df, 1)), 0.0) if len(items) else df * 0.0
        # each item's links in a row (by item position): entity, fact id, relation and source of each
        order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
        self._ptr = np.searchsorted(np.asarray(rows, dtype=np.int64)[order], np.arange(len(items) + 1))
        self._ent = np.asarray(cols, dtype=np.int64)[order]
        self.relations, self.sources = list(rel_code), list(src_code)
        if self.has_facts:
            encoded = [ids[j].encode() for j in order.tolist()]
            self._fact_end = np.cumsum([len(b) for b in encoded], dtype=np.int64)
            self._fact_buf = b"".join(encoded)
            self._rel = np.asarray(rel, dtype=np.int32)[order]
            self._src = np.asarray(src, dtype=np.int32)[order]

    def _item_links(self, item: str) -> list[tuple[int, str, str, str]]:
        """``(entity position, fact id, relation, source)`` of each link of ``item``, as read."""
        k = self.pos.get(item)
        if k is None or not self.has_facts:
            return []
        lo, hi = int(self._ptr[k]), int(self._ptr[k + 1])
        if lo == hi:
            return []
        ends = self._fact_end[lo:hi].tolist()
        starts = [int(self._fact_end[lo - 1]) if lo else 0, *ends[:-1]]
        buf, rels, srcs = self._fact_buf, self.relations, self.sources
        return [
            (e, buf[s:t].decode(), rels[r], srcs[o])
            for e, s, t, r, o in zip(
                self._ent[lo:hi].tolist(),
                starts,
                ends,
                self._rel[lo:hi].tolist(),
                self._src[lo:hi].tolist(),
                strict=True,
            )
        ]

    def seed_links(self, seeds: Iterable[str], max_degree: int) -> list[SeedLink]:
        """The facts linking each seed to an entity of degree at most ``max_degree``, as the stores' SQL read them
        (a seed that is not an item has none)."""
        out: list[SeedLink] = []
        for seed in seeds:
            for e, fact, relation, source in self._item_links(seed):
                degree = self._degree[e]
                if degree <= max_degree:
                    out.append(SeedLink(seed, self.entities[e], self.labels[e], fact, relation, source, degree))
        return out

    def target_links(self, targets: Iterable[str], entities: Collection[str]) -> list[TargetLink]:
        """The facts linking each target to one of ``entities``."""
        out: list[TargetLink] = []
        wanted = set(entities)
        if not wanted:
            return out
        for target in targets:
            for e, fact, relation, source in self._item_links(target):
                entity = self.entities[e]
                if entity in wanted:
                    out.append(TargetLink(target, entity, fact, relation, source))
        return out

    def scores(
        self, seed_items: Mapping[str, float], exclude: set[str] | frozenset[str], n: int, max_df: int
    ) -> list[tuple[str, float]]:
        """Σ over paths seed → entity (df ≤ ``max_df``) → candidate of seed weight × rarity (one path per fact
        linking the candidate to the entity), best first, ties by id; seeds, non-items and ``exclude`` left out."""
        seeds = [(self.pos[s], float(w)) for s, w in seed_items.items() if s in self.pos]
        if not seeds:
            return []
        sub = self.by_item[[k for k, _ in seeds]]
        linked = np.diff(sub.tocsc().indptr) > 0
        reached = np.flatnonzero(linked & (self.df <= max_df))
        if not len(reached):
            return []
        weight = np.asarray(sub.T @ np.array([w for _, w in seeds])).ravel()[reached] * self.rarity[reached]
        block = self.by_entity[reached]
        score = np.asarray(block.T @ weight).ravel()
        cand = np.unique(block.indices)
        banned = [self.pos[i] for i in {*seed_items, *exclude} if i in self.pos]
        cand = cand[~np.isin(cand, banned)]
        top = cand[np.lexsort((cand, -score[cand]))][:n]
        return [(self.items[k], float(score[k])) for k in top]
