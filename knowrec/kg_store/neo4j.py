"""Graph store on a Neo4j 5.26 server, through the official ``neo4j`` Python driver (Bolt).

The model mirrors :mod:`knowrec.kg_store.sqlite`:

* every item and entity is a ``(:KGNode {id})`` node, labelled ``:Item`` (``title``, ``title_fold``, ``text``,
  ``attributes`` as JSON) or ``:Entity`` (``label``, ``df`` = how many items it is linked to). An id that becomes an
  item stops being an entity (the node is relabelled; its facts stay attached);
* a fact is a ``(head)-[:FACT {id, relation, head_label, tail_label, source, provenance}]->(tail)`` relationship
  (``provenance`` as JSON, ``''`` when none; a fact stored before these two existed reads as ``dataset`` without
  provenance). Relation names are data, so they are a property, never a relationship type;
* users are ``(:User {id})``; an interaction is ``(:User)-[:INTERACTED {rating, ts, seq}]->(:Item)``, one per pair;
  ``seq`` is the write order that breaks ties of equal timestamps (an interaction stored before it existed has none:
  it counts as written before the others and ties with its like by item id).

A store opened with ``fact_sources`` runs the variants of the read statements in :data:`_FILTERED`: they follow only
the FACT relationships whose source is in ``$sources`` and count degrees over those on the fly (``COUNT {}``), where
the unfiltered ones (:data:`_ALL`) use the stored ``df``.

All Cypher of this backend is in this module, as constants with ``$parameters``; no statement is ever built from data.
Writes are ``UNWIND $rows AS row …`` statements of up to 5,000 rows, the whole batch in one transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from knowrec.errors import InvalidInput, StoreUnavailable
from knowrec.kg_store._common import (
    NO_LIMIT,
    PATHS_PER_CANDIDATE,
    WRITE_CHUNK,
    SeedLink,
    TargetLink,
    attributes_json,
    check_batch_size,
    check_fact_sources,
    check_known_items,
    chunks,
    endpoint_labels,
    entity_weights,
    fact_from_row,
    interaction_from_row,
    item_from_row,
    keyset_pages,
    one_line,
    provenance_json,
    rank_facts,
    rank_paths,
    top_popular,
    unique,
)
from knowrec.kg_store.base import GraphBatch, Progress, Retraction, WriteStats
from knowrec.types import Candidate, Entity, Fact, Interaction, Item, KGPath

__all__ = ["Neo4jGraphStore"]

logger = logging.getLogger(__name__)

_READ_CHUNK = 5000
"""Ids per ``UNWIND`` in reads."""

_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")

_T = TypeVar("_T")

_SCHEMA = (
    "CREATE CONSTRAINT knowrec_kgnode_id IF NOT EXISTS FOR (n:KGNode) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT knowrec_item_id IF NOT EXISTS FOR (n:Item) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT knowrec_entity_id IF NOT EXISTS FOR (n:Entity) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT knowrec_user_id IF NOT EXISTS FOR (n:User) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT knowrec_fact_id IF NOT EXISTS FOR ()-[r:FACT]-() REQUIRE r.id IS UNIQUE",
    "CREATE RANGE INDEX knowrec_interacted_seq IF NOT EXISTS FOR ()-[r:INTERACTED]-() ON (r.seq)",
)

# --- write statements -------------------------------------------------------------------------------------------

_COUNTS = """
CALL () { MATCH (n:Item) RETURN count(n) AS items }
CALL () { MATCH ()-[r:FACT]->() RETURN count(r) AS facts }
CALL () { MATCH ()-[r:INTERACTED]->() RETURN count(r) AS interactions }
RETURN items, facts, interactions
"""

# An id that becomes an item is no longer an entity.
_UPSERT_ITEMS = """
UNWIND $rows AS row
MERGE (n:KGNode {id: row.id})
SET n:Item, n.title = row.title, n.title_fold = row.title_fold, n.text = row.text, n.attributes = row.attributes
REMOVE n:Entity, n.label, n.df
"""

# Fact endpoints that are not items become entities (label: a non-empty one wins).
_UPSERT_ENDPOINTS = """
UNWIND $rows AS row
MERGE (n:KGNode {id: row.id})
ON CREATE SET n:Entity, n.label = row.label, n.df = 0
ON MATCH SET n.label = CASE WHEN n:Entity AND row.label <> '' THEN row.label ELSE n.label END
"""

# A non-empty label is never replaced by an empty one. Only facts that change are written (a no-op SET of thousands
# of relationships in one transaction is very slow on Neo4j 5).
_UPDATE_FACTS = """
UNWIND $rows AS row
MATCH ()-[f:FACT]->() USING INDEX f:FACT(id) WHERE f.id = row.id
WITH f, row WHERE (row.head_label <> '' AND row.head_label <> f.head_label)
    OR (row.tail_label <> '' AND row.tail_label <> f.tail_label)
SET f.head_label = CASE WHEN row.head_label <> '' THEN row.head_label ELSE f.head_label END,
    f.tail_label = CASE WHEN row.tail_label <> '' THEN row.tail_label ELSE f.tail_label END
"""

_CREATE_FACTS = """
UNWIND $rows AS row
MATCH (h:KGNode {id: row.head})
MATCH (t:KGNode {id: row.tail})
WITH row, h, t WHERE NOT EXISTS { MATCH ()-[f:FACT]->() USING INDEX f:FACT(id) WHERE f.id = row.id }
CREATE (h)-[:FACT {id: row.id, relation: row.relation, head_label: row.head_label, tail_label: row.tail_label,
                   source: row.source, provenance: row.provenance}]->(t)
"""

# A retraction removes a fact only where it is stored with the source named; its endpoints' ids come back.
_RETRACT_FACTS = """
UNWIND $rows AS row
MATCH (h)-[f:FACT]->(t) USING INDEX f:FACT(id) WHERE f.id = row.id AND f.source = row.source
WITH f, h.id AS head, t.id AS tail
DELETE f
RETURN head, tail
"""

# Entities (endpoints of retracted facts) that no fact names any more.
_DROP_BARE_ENTITIES = """
UNWIND $ids AS id
MATCH (n:KGNode {id: id}) WHERE n:Entity AND NOT EXISTS { (n)-[:FACT]-() }
DELETE n
"""

_ITEM_NEIGHBOURS = """
UNWIND $ids AS id
MATCH (:Item {id: id})-[:FACT]-(e:Entity)
RETURN DISTINCT e.id
"""

_RECOMPUTE_DF = """
UNWIND $ids AS id
MATCH (e:Entity {id: id})
OPTIONAL MATCH (e)-[:FACT]-(i:Item)
WITH e, count(DISTINCT i) AS df
SET e.df = df
"""

_UPSERT_INTERACTIONS = """
UNWIND $rows AS row
MATCH (i:Item {id: row.item})
MERGE (u:User {id: row.user})
MERGE (u)-[r:INTERACTED]->(i)
  ON CREATE SET r.seq = row.seq
  ON MATCH SET r.seq = CASE WHEN r.ts = row.ts OR (r.ts IS NULL AND row.ts IS NULL) THEN r.seq ELSE row.seq END
SET r.rating = row.rating, r.ts = row.ts
"""

# The last write order given (the index answers it without walking the interactions).
_LAST_SEQ = """
MATCH ()-[r:INTERACTED]->() WHERE r.seq IS NOT NULL
RETURN r.seq ORDER BY r.seq DESC LIMIT 1
"""

# --- read statements --------------------------------------------------------------------------------------------

_HAS_ITEMS = "UNWIND $ids AS id MATCH (i:Item {id: id}) RETURN i.id"

_ITEMS = "UNWIND $ids AS id MATCH (i:Item {id: id}) RETURN i.id, i.title, i.text, i.attributes"

_ITEM_PAGE = """
MATCH (i:Item) WHERE $last IS NULL OR i.id > $last
RETURN i.id, i.title, i.text, i.attributes ORDER BY i.id LIMIT $n
"""

_SEARCH = """
MATCH (i:Item) WHERE i.title_fold CONTAINS $q
WITH i, COUNT { (i)<-[:INTERACTED]-(:User) } AS c
RETURN i.id, i.title, i.text, i.attributes ORDER BY c DESC, i.id LIMIT $n
"""

_HISTORY = """
MATCH (u:User {id: $user})-[r:INTERACTED]->(i:Item)
RETURN u.id, i.id, r.rating, r.ts ORDER BY r.ts IS NULL, r.ts DESC, r.seq IS NULL, r.seq DESC, i.id DESC
LIMIT $n
"""

_USER_PAGE = "MATCH (u:User) WHERE $last IS NULL OR u.id > $last RETURN u.id ORDER BY u.id LIMIT $n"

# A missing timestamp sorts first within a user (``false`` sorts before ``true``).
_INTERACTIONS_PAGE = """
UNWIND $users AS uid
MATCH (u:User {id: uid})-[r:INTERACTED]->(i:Item)
RETURN u.id, i.id, r.rating, r.ts ORDER BY u.id, r.ts IS NOT NULL, r.ts, r.seq IS NOT NULL, r.seq, i.id
"""

_N_INTERACTIONS = "MATCH ()-[r:INTERACTED]->() RETURN count(r)"

_POPULAR = """
MATCH (:User)-[r:INTERACTED]->(i:Item)
WITH i.id AS id, count(r) AS c WHERE NOT id IN $exclude
RETURN id, c ORDER BY c DESC, id LIMIT $n
"""

_GET_FACTS = """
UNWIND $ids AS fid
MATCH (h:KGNode)-[f:FACT]->(t:KGNode) USING INDEX f:FACT(id) WHERE f.id = fid
RETURN f.id, h.id, f.relation, t.id,
    CASE WHEN h:Item AND h.title <> '' THEN h.title WHEN h:Entity AND h.label <> '' THEN h.label
         ELSE f.head_label END,
    CASE WHEN t:Item AND t.title <> '' THEN t.title WHEN t:Entity AND t.label <> '' THEN t.label
         ELSE f.tail_label END,
    coalesce(f.source, 'dataset'), coalesce(f.provenance, '')
"""

_N_ITEMS = "MATCH (i:Item) RETURN count(i)"

# Every entity (in id order, a page at a time) with its label, stored degree and the relations linking items to it.
_ENTITY_PAGE = """
MATCH (e:Entity) WHERE $last IS NULL OR e.id > $last
WITH e ORDER BY e.id LIMIT $n
RETURN e.id, e.label, e.df, COLLECT { MATCH (e)-[f:FACT]-(:Item) RETURN DISTINCT f.relation } AS relations
ORDER BY e.id
"""


class _Reads(NamedTuple):
    """The read statements that follow facts: :data:`_ALL` (every fact) or :data:`_FILTERED` (``$sources`` only).

    ``'dataset'`` in them is :data:`knowrec.types.DATASET_SOURCE` (a fact without ``source`` was stored before there
    were sources: it came with the data).
    """

    item_facts: str
    """Each fact of each asked node (either direction) with the degree of its other endpoint (1 unless an entity)."""
    entity_df: str
    item_entities: str
    seed_links: str
    """Seed —fact→ entity links with the entity's degree in [1, $max_df]: the fields of a
    :class:`~knowrec.kg_store._common.SeedLink`."""
    kg_scores: str
    """Σ over paths = Σ over entities of (Σ of the entity's seed-link weights) × (facts linking the candidate to it)."""
    cand_links: str
    """Candidate —fact→ entity links to the entities in $entities: the fields of a
    :class:`~knowrec.kg_store._common.TargetLink`."""


_ALL = _Reads(
    item_facts="""
UNWIND $ids AS id
MATCH (x:KGNode {id: id})-[f:FACT]-(o:KGNode)
RETURN id, f.id, f.relation, CASE WHEN o:Entity AND o.df > 0 THEN o.df ELSE 1 END
""",
    entity_df="UNWIND $ids AS id MATCH (e:Entity {id: id}) RETURN e.id, e.df",
    item_entities="""
UNWIND $ids AS id
MATCH (:KGNode {id: id})-[:FACT]-(e:Entity)
RETURN DISTINCT id, e.id
""",
    seed_links="""
UNWIND $seeds AS sid
MATCH (s:KGNode {id: sid})-[f:FACT]-(e:Entity)
WHERE e.df >= 1 AND e.df <= $max_df
RETURN sid, e.id, coalesce(e.label, ''), f.id, f.relation, coalesce(f.source, 'dataset'), e.df
""",
    kg_scores="""
UNWIND $entities AS row
MATCH (e:Entity {id: row.id})-[:FACT]-(c:Item)
WITH c.id AS cand, sum(row.w) AS score
WHERE NOT cand IN $skip
RETURN cand, score ORDER BY score DESC, cand LIMIT $n
""",
    cand_links="""
UNWIND $cands AS cid
MATCH (c:KGNode {id: cid})-[f:FACT]-(e:Entity)
WHERE e.id IN $entities
RETURN cid, e.id, f.id, f.relation, coalesce(f.source, 'dataset')
""",
)

# The degree of an entity ``e`` over the facts of $sources: how many distinct items such facts link it to.
_FILTERED = _Reads(
    item_facts="""
UNWIND $ids AS id
MATCH (x:KGNode {id: id})-[f:FACT]-(o:KGNode)
WHERE coalesce(f.source, 'dataset') IN $sources
WITH id, f, o, CASE WHEN o:Entity THEN COUNT {
    MATCH (o)-[g:FACT]-(i:Item) WHERE coalesce(g.source, 'dataset') IN $sources RETURN DISTINCT i
} ELSE 1 END AS df
RETURN id, f.id, f.relation, CASE WHEN df > 0 THEN df ELSE 1 END
""",
    entity_df="""
UNWIND $ids AS id
MATCH (e:Entity {id: id})
RETURN e.id, COUNT { MATCH (e)-[g:FACT]-(i:Item) WHERE coalesce(g.source, 'dataset') IN $sources RETURN DISTINCT i }
""",
    item_entities="""
UNWIND $ids AS id
MATCH (:KGNode {id: id})-[f:FACT]-(e:Entity)
WHERE coalesce(f.source, 'dataset') IN $sources
RETURN DISTINCT id, e.id
""",
    seed_links="""
UNWIND $seeds AS sid
MATCH (s:KGNode {id: sid})-[f:FACT]-(e:Entity)
WHERE coalesce(f.source, 'dataset') IN $sources
WITH e, collect([sid, f.id, f.relation, coalesce(f.source, 'dataset')]) AS links
WITH e, links, COUNT {
    MATCH (e)-[g:FACT]-(i:Item) WHERE coalesce(g.source, 'dataset') IN $sources RETURN DISTINCT i
} AS df
WHERE df >= 1 AND df <= $max_df
UNWIND links AS link
RETURN link[0], e.id, coalesce(e.label, ''), link[1], link[2], link[3], df
""",
    kg_scores="""
UNWIND $entities AS row
MATCH (e:Entity {id: row.id})-[f:FACT]-(c:Item)
WHERE coalesce(f.source, 'dataset') IN $sources
WITH c.id AS cand, sum(row.w) AS score
WHERE NOT cand IN $skip
RETURN cand, score ORDER BY score DESC, cand LIMIT $n
""",
    cand_links="""
UNWIND $cands AS cid
MATCH (c:KGNode {id: cid})-[f:FACT]-(e:Entity)
WHERE e.id IN $entities AND coalesce(f.source, 'dataset') IN $sources
RETURN cid, e.id, f.id, f.relation, coalesce(f.source, 'dataset')
""",
)

_STATS = """
CALL () { MATCH (n:Item) RETURN count(n) AS items }
CALL () { MATCH (n:Entity) RETURN count(n) AS entities }
CALL () { MATCH ()-[r:FACT]->() RETURN count(r) AS facts }
CALL () { MATCH (n:User) RETURN count(n) AS users }
CALL () { MATCH ()-[r:INTERACTED]->() RETURN count(r) AS interactions }
RETURN items, entities, facts, users, interactions
"""


class Neo4jGraphStore:
    """A :class:`~knowrec.kg_store.base.GraphStore` on a Neo4j 5.26+ server.

    Nothing is opened by the constructor: the first use (or :meth:`verify`) connects, checks the server and creates
    the uniqueness constraints (``IF NOT EXISTS``). The driver is thread-safe and every operation opens its own
    session, so one store can serve a threaded server.

    Args:
        uri: ``bolt://host:7687``, ``neo4j://…`` (or the ``+s``/``+ssc`` variants).
        user: User name, used only when ``password`` is given.
        password: Password; ``None`` connects without authentication.
        database: Database name; ``None`` is the server's default database.
        connection_timeout: Seconds to wait for a connection before :class:`StoreUnavailable`.
        retry_time: Seconds a read is retried on transient errors (server restarting, leader switch).
        fact_sources: Read only the facts whose ``source`` is one of these (``None``: every fact). Every read that
            uses facts (:meth:`facts`, :meth:`item_entities`, :meth:`entity_degrees`, :meth:`kg_candidates`,
            :meth:`paths`, :meth:`paths_many`) then answers as a store holding only those facts would, entity
            degrees included (counted on the fly); :meth:`get_facts`, :meth:`iter_entities` and :meth:`stats` see
            everything, and writes are not affected.

    Example:
        >>> from knowrec.types import Fact, Interaction, Item
        >>> store = Neo4jGraphStore("bolt://127.0.0.1:7687")  # doctest: +SKIP
        >>> store.write(GraphBatch(
        ...     items=[Item(id="1", title="Toy Story"), Item(id="2", title="Toy Story 2")],
        ...     facts=[Fact(head="1", relation="director", tail="p:lasseter", tail_label="John Lasseter"),
        ...            Fact(head="2", relation="director", tail="p:lasseter", tail_label="John Lasseter")],
        ... ))  # doctest: +SKIP
        WriteStats(items=2, facts=2, interactions=0, retracted=0)
        >>> [(c.item_id, round(c.score, 3)) for c in store.kg_candidates({"1": 1.0}, set(), n=5)]  # doctest: +SKIP
        [('2', 0.693)]
    """

    def __init__(
        self,
        uri: str,
        *,
        user: str = "neo4j",
        password: str | None = None,
        database: str | None = None,
        connection_timeout: float = 10.0,
        retry_time: float = 10.0,
        fact_sources: Collection[str] | None = None,
    ) -> None:
        self.fact_sources: frozenset[str] | None = check_fact_sources(fact_sources)
        self._q = _ALL if self.fact_sources is None else _FILTERED
        self._sources: list[str] | None = None if self.fact_sources is None else sorted(self.fact_sources)
        self.uri = uri
        self.user = user
        self.database = database or None
        self._password = password
        self._connection_timeout = connection_timeout
        self._retry_time = retry_time
        self._lock = threading.Lock()
        self._driver: Any = None
        self._ready = False
        self._closed = False
        self._popular_cache: tuple[int, list[tuple[str, int]]] | None = None

    def __repr__(self) -> str:
        db = f", database={self.database!r}" if self.database else ""
        sources = "" if self._sources is None else f", fact_sources={self._sources!r}"
        return f"Neo4jGraphStore({self.uri!r}{db}{sources})"

    # --- connection ---------------------------------------------------------------------------------------------

    def _unavailable(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"cannot reach Neo4j at {self.uri}: {why}")

    def _reason(self, e: BaseException) -> str:
        """A one-line reason from a driver exception (the driver's messages span several lines)."""
        from neo4j import exceptions as nx

        if isinstance(e, nx.AuthError):
            return f"authentication failed for user {self.user!r} ({one_line(str(e.message or e))})"
        text = one_line(str(e)) or type(e).__name__
        if "reason" in text and "Failed to establish connection" in text:
            # "Couldn't connect to h:p (resolved to …): Failed to establish connection to … (reason [Errno 111] …)"
            text = text[text.rfind("(reason") + 1 :].rstrip(")").replace("reason ", "", 1)
        return text

    def _is_unavailable(self, e: BaseException) -> bool:
        """Whether a driver exception means the server cannot be used (vs. a bug in a statement)."""
        from neo4j import exceptions as nx

        if isinstance(e, nx.AuthError | nx.Forbidden):
            return True
        if isinstance(e, nx.ClientError):  # syntax, constraint, type errors: a bug, not an outage
            return False
        return isinstance(e, nx.Neo4jError | nx.DriverError | OSError)

    def verify(self) -> None:
        """Connect, check the server and create the constraints if missing.

        Raises:
            StoreUnavailable: The server cannot be reached, refuses the credentials or the database does not exist.
                The message names the URI.

        Once connected, each call checks the server again (readiness probes use this).
        """
        was_ready = self._ready
        driver = self._get_driver()
        if was_ready:
            self._call(driver.verify_connectivity)

    def _get_driver(self) -> Any:
        with self._lock:
            if self._closed:
                raise self._unavailable("the store is closed")
            if self._ready:
                return self._driver
            scheme = self.uri.split("://", 1)[0].lower() if "://" in self.uri else ""
            if scheme not in _SCHEMES:
                raise self._unavailable(f"not a Bolt URI (use one of {', '.join(s + '://' for s in _SCHEMES)})")
            import neo4j

            try:
                if self._driver is None:
                    auth = (self.user, self._password) if self._password is not None else None
                    self._driver = neo4j.GraphDatabase.driver(
                        self.uri,
                        auth=auth,
                        connection_timeout=self._connection_timeout,
                        connection_acquisition_timeout=self._connection_timeout + 5.0,
                        max_transaction_retry_time=self._retry_time,
                        notifications_min_severity="OFF",
                        user_agent="knowrec",
                    )
                self._driver.verify_connectivity()
                with self._driver.session(database=self.database) as session:
                    for stmt in _SCHEMA:
                        logger.debug("Cypher %s", stmt)
                        session.run(stmt).consume()
            except Exception as e:
                if isinstance(e, ValueError | TypeError) or self._is_unavailable(e):
                    logger.debug("Neo4j at %s unavailable", self.uri, exc_info=True)
                    raise self._unavailable(self._reason(e)) from None
                raise
            self._ready = True
            logger.debug("connected to Neo4j at %s", self.uri)
            return self._driver

    def close(self) -> None:
        """Close the driver. Safe to call twice; later use raises :class:`StoreUnavailable`."""
        with self._lock:
            self._closed = True
            driver, self._driver = self._driver, None
        if driver is not None:
            driver.close()

    def _call(self, what: Callable[[], _T]) -> _T:
        """Run ``what`` turning an outage into :class:`StoreUnavailable` (statement errors are left as they are)."""
        try:
            return what()
        except (StoreUnavailable, InvalidInput):
            raise
        except Exception as e:
            if self._is_unavailable(e):
                logger.debug("Neo4j at %s failed", self.uri, exc_info=True)
                raise self._unavailable(self._reason(e)) from None
            raise

    def _read(self, work: Callable[[Any], _T]) -> _T:
        """Run ``work(tx)`` in a managed read transaction of a new session."""
        driver = self._get_driver()

        def go() -> _T:
            with driver.session(database=self.database, default_access_mode="READ") as session:
                return session.execute_read(work)

        return self._call(go)

    @staticmethod
    def _rows(tx: Any, query: str, **params: Any) -> list[list[Any]]:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Cypher %s %s", one_line(query), _describe(params))
        return [list(r.values()) for r in tx.run(query, params)]

    def _run(self, tx: Any, query: str, **params: Any) -> None:
        """Run one write statement in ``tx`` (a seam for tests that fail a write part-way)."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Cypher %s %s", one_line(query), _describe(params))
        tx.run(query, params).consume()

    # --- write --------------------------------------------------------------------------------------------------

    def write(self, batch: GraphBatch, progress: Progress | None = None) -> WriteStats:
        """Upsert a batch in one transaction; returns how many items, facts and interactions were new.

        Items update title, text and attributes; facts update their labels (a non-empty label is never replaced
        by an empty one) but keep the source and provenance they were first stored with; interactions update rating
        and timestamp. Entities are the fact endpoints that are not item ids; their labels come from the facts.
        ``batch.retract`` goes first: each named fact is deleted where it is stored with the source named, and an
        entity left with no fact goes too (``WriteStats.retracted`` counts the facts).
        ``progress(stage, n)`` is called after each chunk of 5,000 rows with stage ``"items"``, ``"facts"`` or
        ``"interactions"``; if it raises, nothing is written. ``fact_sources`` does not apply to writes.

        Raises:
            InvalidInput: An interaction names an item that is neither in the batch nor stored (nothing written).
            StoreUnavailable: The server cannot be reached or the transaction fails (nothing written).
        """
        driver = self._get_driver()

        def go() -> WriteStats:
            with driver.session(database=self.database) as session, session.begin_transaction() as tx:
                stats = self._write(tx, batch, progress)
                tx.commit()
                return stats

        stats = self._call(go)
        logger.info("graph store %s: wrote %s", self.uri, stats)
        return stats

    def _counts(self, tx: Any) -> dict[str, int]:
        row = self._rows(tx, _COUNTS)[0]
        return {"items": int(row[0]), "facts": int(row[1]), "interactions": int(row[2])}

    def _write(self, tx: Any, batch: GraphBatch, progress: Progress | None) -> WriteStats:
        batch_item_ids = {item.id for item in batch.items}
        check_known_items(
            (x for x in batch.interactions if x.item_id not in batch_item_ids), lambda ids: self._has_items(tx, ids)
        )

        retracted = self._retract(tx, batch.retract) if batch.retract else 0
        before = self._counts(tx)

        for item_chunk in chunks(batch.items, WRITE_CHUNK):
            rows: dict[str, dict[str, Any]] = {}
            for it in item_chunk:  # a later row of the same id wins, as with one upsert per row
                rows[it.id] = {
                    "id": it.id,
                    "title": it.title,
                    "title_fold": it.title.casefold(),
                    "text": it.text,
                    "attributes": attributes_json(it),
                }
            self._run(tx, _UPSERT_ITEMS, rows=list(rows.values()))
            if progress is not None:
                progress("items", len(item_chunk))

        labels = endpoint_labels(batch.facts)
        ends = [{"id": node, "label": label} for node, label in labels.items()]
        for echunk in chunks(ends, WRITE_CHUNK):
            self._run(tx, _UPSERT_ENDPOINTS, rows=list(echunk))

        for fchunk in chunks(batch.facts, WRITE_CHUNK):
            frows: dict[str, dict[str, str]] = {}
            for f in fchunk:
                row = frows.get(f.id)
                if row is None:
                    frows[f.id] = {
                        "id": f.id,
                        "head": f.head,
                        "relation": f.relation,
                        "tail": f.tail,
                        "head_label": f.head_label,
                        "tail_label": f.tail_label,
                        "source": f.source,
                        "provenance": provenance_json(f),
                    }
                else:  # the same fact twice in a chunk: non-empty labels of the later one win, the rest of the first
                    row["head_label"] = f.head_label or row["head_label"]
                    row["tail_label"] = f.tail_label or row["tail_label"]
            self._run(tx, _UPDATE_FACTS, rows=list(frows.values()))
            self._run(tx, _CREATE_FACTS, rows=list(frows.values()))
            if progress is not None:
                progress("facts", len(fchunk))

        if batch.items or batch.facts:
            # Entities whose df may have changed: endpoints of the batch's facts and neighbours of its items.
            touched = set(labels)
            for ichunk_ids in chunks(sorted(batch_item_ids), _READ_CHUNK):
                touched.update(r[0] for r in self._rows(tx, _ITEM_NEIGHBOURS, ids=list(ichunk_ids)))
            for tchunk in chunks(sorted(touched), WRITE_CHUNK):
                self._run(tx, _RECOMPUTE_DF, ids=list(tchunk))

        # seq: the write order, which breaks ties of equal timestamps (the order the data gave them in)
        seq = (self._rows(tx, _LAST_SEQ) or [[0]])[0][0] if batch.interactions else 0
        for xchunk in chunks(batch.interactions, WRITE_CHUNK):
            xrows: dict[tuple[str, str], dict[str, Any]] = {}
            for n, x in enumerate(xchunk, seq + 1):  # a later row of the same pair wins (a new timestamp: its place)
                prev = xrows.get((x.user_id, x.item_id))
                xrows[(x.user_id, x.item_id)] = {
                    "user": x.user_id,
                    "item": x.item_id,
                    "rating": x.rating,
                    "ts": x.timestamp,
                    "seq": prev["seq"] if prev is not None and prev["ts"] == x.timestamp else n,
                }
            seq += len(xchunk)
            self._run(tx, _UPSERT_INTERACTIONS, rows=list(xrows.values()))
            if progress is not None:
                progress("interactions", len(xchunk))

        after = self._counts(tx)
        return WriteStats(**{t: after[t] - before[t] for t in before}, retracted=retracted)

    def _retract(self, tx: Any, retract: Sequence[Retraction]) -> int:
        """Delete the facts stored with the source each retraction names; drop the entities left with no fact and
        recompute the degrees of the others. Returns how many facts went."""
        rows = {r.fact_id: {"id": r.fact_id, "source": r.source} for r in retract}
        ends: set[str] = set()
        gone = 0
        for chunk in chunks(list(rows.values()), WRITE_CHUNK):
            for head, tail in self._rows(tx, _RETRACT_FACTS, rows=list(chunk)):
                ends.update((head, tail))
                gone += 1
        for echunk in chunks(sorted(ends), WRITE_CHUNK):
            self._run(tx, _DROP_BARE_ENTITIES, ids=list(echunk))
            self._run(tx, _RECOMPUTE_DF, ids=list(echunk))
        return gone

    # --- items --------------------------------------------------------------------------------------------------

    def _has_items(self, tx: Any, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(unique(ids), _READ_CHUNK):
            found.update(r[0] for r in self._rows(tx, _HAS_ITEMS, ids=list(chunk)))
        return found

    def has_items(self, item_ids: Sequence[str]) -> set[str]:
        """The subset of ``item_ids`` that are stored items."""
        ids = unique(item_ids)
        return self._read(lambda tx: self._has_items(tx, ids)) if ids else set()

    def items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """Stored items by id, in the order asked (missing ids are left out)."""
        ids = unique(item_ids)

        def work(tx: Any) -> dict[str, Item]:
            found: dict[str, Item] = {}
            for chunk in chunks(ids, _READ_CHUNK):
                for row in self._rows(tx, _ITEMS, ids=list(chunk)):
                    found[row[0]] = item_from_row(row)
            return found

        found = self._read(work) if ids else {}
        return {i: found[i] for i in ids if i in found}

    def iter_items(self, batch_size: int = 1000) -> Iterator[list[Item]]:
        """All items in id order, in lists of ``batch_size`` (each page is read in its own transaction).

        Raises:
            InvalidInput: ``batch_size`` is below 1.
        """
        check_batch_size(batch_size)

        def page(last: str | None) -> list[list[Any]]:
            return self._read(lambda tx: self._rows(tx, _ITEM_PAGE, last=last, n=batch_size))

        for rows in keyset_pages(page, batch_size, lambda rows: rows[-1][0]):
            yield [item_from_row(r) for r in rows]

    def search_items(self, text: str, n: int = 10) -> list[Item]:
        """Items whose title contains ``text`` (case-insensitive, Unicode case folding), most interacted first."""
        if n <= 0:
            return []
        rows = self._read(lambda tx: self._rows(tx, _SEARCH, q=text.casefold(), n=n))
        return [item_from_row(r) for r in rows]

    # --- interactions -------------------------------------------------------------------------------------------

    def history(self, user_id: str, n: int | None = None) -> list[Interaction]:
        """The user's interactions, most recent first; no timestamp counts as oldest; ties by item id descending."""
        if n is not None and n <= 0:
            return []
        limit = NO_LIMIT if n is None else n
        rows = self._read(lambda tx: self._rows(tx, _HISTORY, user=user_id, n=limit))
        return [interaction_from_row(r) for r in rows]

    def interactions(self) -> Iterator[Interaction]:
        """Every interaction in (user, timestamp, write order) order; missing timestamps first within a user.

        Read in pages of users, each in its own transaction, so a concurrent write may show up between pages.
        """
        page_users = 1000

        def page(last: str | None) -> tuple[list[str], list[list[Any]]]:
            def work(tx: Any) -> tuple[list[str], list[list[Any]]]:
                users = [r[0] for r in self._rows(tx, _USER_PAGE, last=last, n=page_users)]
                return users, self._rows(tx, _INTERACTIONS_PAGE, users=users) if users else []

            return self._read(work)

        for _, rows in keyset_pages(page, page_users, lambda p: p[0][-1], size=lambda p: len(p[0])):
            for row in rows:
                yield interaction_from_row(row)

    def popular(self, n: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, int]]:
        """Most-interacted items as ``(item_id, count)``, ties by item id ascending; excluded ids left out."""
        if n <= 0:
            return []
        # Counts change only when interactions are added (there are no deletes), so the number of interactions
        # (from Neo4j's count store: O(1)) tells whether the cached ranking is still right, whoever wrote.

        def work(tx: Any) -> tuple[int, list[tuple[str, int]]]:
            total = int(self._rows(tx, _N_INTERACTIONS)[0][0])
            cached = self._popular_cache
            if cached is not None and cached[0] == total:
                return cached
            rows = self._rows(tx, _POPULAR, exclude=[], n=NO_LIMIT)
            return total, [(r[0], int(r[1])) for r in rows]

        self._popular_cache = self._read(work)
        return top_popular(self._popular_cache[1], n, exclude)

    # --- facts --------------------------------------------------------------------------------------------------

    def facts(self, item_ids: Sequence[str], n: int | None = None) -> dict[str, list[Fact]]:
        """Each item's own facts (head or tail), rarest other endpoint first, at most ``n`` per item.

        Order: degree (``df``) of the other endpoint ascending (an endpoint that is an item counts as ``df`` 1),
        then relation, then fact id. Every asked id is a key (an empty list when it has no facts). Labels are
        filled from the stored items and entities; ``source`` and ``provenance`` as stored. With ``fact_sources``
        only those facts count, for the degrees too.
        """
        ids = unique(item_ids)
        out: dict[str, list[Fact]] = {i: [] for i in ids}
        if not ids or (n is not None and n <= 0):
            return out

        def work(tx: Any) -> tuple[dict[str, list[str]], dict[str, Fact]]:
            rows: list[list[Any]] = []
            for chunk in chunks(ids, _READ_CHUNK):
                rows.extend(self._rows(tx, self._q.item_facts, ids=list(chunk), sources=self._sources))
            ranked = rank_facts(rows, ids, n)
            return ranked, self._get_facts(tx, [fid for fids in ranked.values() for fid in fids])

        ranked, found = self._read(work)
        for item_id, fids in ranked.items():
            out[item_id] = [found[fid] for fid in fids if fid in found]
        return out

    def _get_facts(self, tx: Any, fact_ids: Sequence[str]) -> dict[str, Fact]:
        found: dict[str, Fact] = {}
        for chunk in chunks(unique(fact_ids), _READ_CHUNK):
            for row in self._rows(tx, _GET_FACTS, ids=list(chunk)):
                found[row[0]] = fact_from_row(row)
        return found

    def get_facts(self, fact_ids: Sequence[str]) -> dict[str, Fact]:
        """Facts by id, in the order asked (missing ids left out); labels filled from the stored nodes.

        Not filtered by ``fact_sources``: a fact asked for by id is returned whatever its source.
        """
        ids = unique(fact_ids)
        if not ids:
            return {}
        found = self._read(lambda tx: self._get_facts(tx, ids))
        return {i: found[i] for i in ids if i in found}

    def item_entities(self, item_ids: Sequence[str]) -> dict[str, set[str]]:
        """Entity ids linked to each item by a fact (of ``fact_sources``) in either direction; every asked id is a
        key."""
        ids = unique(item_ids)
        out: dict[str, set[str]] = {i: set() for i in ids}

        def work(tx: Any) -> list[list[Any]]:
            rows: list[list[Any]] = []
            for chunk in chunks(ids, _READ_CHUNK):
                rows.extend(self._rows(tx, self._q.item_entities, ids=list(chunk), sources=self._sources))
            return rows

        for item_id, entity in self._read(work) if ids else []:
            out[item_id].add(entity)
        return out

    def entity_degrees(self, entity_ids: Sequence[str]) -> dict[str, int]:
        """How many stored items each entity is linked to (the ``df`` kept on ``:Entity``; with ``fact_sources``,
        counted over those facts); 0 for an unknown id."""
        ids = unique(entity_ids)
        out = dict.fromkeys(ids, 0)

        def work(tx: Any) -> list[list[Any]]:
            rows: list[list[Any]] = []
            for chunk in chunks(ids, _READ_CHUNK):
                rows.extend(self._rows(tx, self._q.entity_df, ids=list(chunk), sources=self._sources))
            return rows

        for entity, df in self._read(work) if ids else []:
            out[entity] = int(df or 0)
        return out

    def iter_entities(self, batch_size: int = 5000) -> Iterator[list[Entity]]:
        """Every stored entity in id order, in lists of ``batch_size`` (each page is read in its own transaction).

        Each has its label, the sorted distinct relations of the facts linking an item to it and its stored degree.
        Not filtered by ``fact_sources``: every fact counts.

        Raises:
            InvalidInput: ``batch_size`` is below 1.
        """
        check_batch_size(batch_size)

        def page(last: str | None) -> list[Entity]:
            rows = self._read(lambda tx: self._rows(tx, _ENTITY_PAGE, last=last, n=batch_size))
            return [
                Entity(id=e, label=label or "", relations=tuple(sorted(set(relations))), degree=int(df or 0))
                for e, label, df, relations in rows
            ]

        yield from keyset_pages(page, batch_size, lambda entities: entities[-1].id)

    # --- knowledge-graph retrieval ------------------------------------------------------------------------------

    def _seed_links(self, tx: Any, seeds: Sequence[str], max_df: int) -> tuple[int, list[SeedLink]]:
        """How many items there are, and the links of the seeds to entities linked to at most ``max_df`` items."""
        n_items = int(self._rows(tx, _N_ITEMS)[0][0])
        links: list[SeedLink] = []
        for chunk in chunks(seeds, _READ_CHUNK):
            rows = self._rows(tx, self._q.seed_links, seeds=list(chunk), max_df=max_df, sources=self._sources)
            links.extend(SeedLink(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6])) for r in rows)
        return n_items, links

    def _paths(
        self,
        tx: Any,
        seeds: Mapping[str, float],
        targets: Sequence[str],
        per_target: int,
        max_degree: int,
        seed_links: tuple[int, list[SeedLink]] | None = None,
    ) -> dict[str, list[KGPath]]:
        """The ``per_target`` heaviest paths of each target from ``seeds`` (through entities linked to at most
        ``max_degree`` items): the raw links read here (the seed links unless given, as :meth:`_seed_links` returns
        them), ranked by :func:`~knowrec.kg_store._common.rank_paths`."""
        n_items, links = self._seed_links(tx, list(seeds), max_degree) if seed_links is None else seed_links
        entities = unique(s.entity for s in links)
        rows = (
            self._rows(tx, self._q.cand_links, cands=list(targets), entities=entities, sources=self._sources)
            if targets and entities
            else []
        )
        return rank_paths(
            seeds,
            links,
            (TargetLink(*r) for r in rows),
            targets,
            n_items=n_items,
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
        """Items sharing entities with the weighted seed items, best first (ties by item id).

        Score = Σ over paths ``seed → entity → candidate`` of seed weight × ``log(1 + N_items / df(entity))``;
        entities linked to more than ``max_entity_items`` items are ignored; seeds and ``exclude`` never appear.
        Each candidate carries its 5 heaviest paths (``KGPath.weight`` = seed weight × rarity; an entity without
        a label is labelled with its id) and ``sources={"kg": score}``. With ``fact_sources`` only those facts
        count, for the degrees too.
        """
        if not seed_items or n <= 0 or max_entity_items < 1:
            return []
        seeds = {k: float(v) for k, v in seed_items.items()}

        def work(tx: Any) -> tuple[list[tuple[str, float]], dict[str, list[KGPath]]]:
            n_items, links = read = self._seed_links(tx, list(seeds), max_entity_items)
            entity_w = entity_weights(seeds, links, n_items=n_items, max_degree=max_entity_items)
            if not entity_w:
                return [], {}
            skip = [*seeds, *exclude]
            entities = [{"id": e, "w": w} for e, w in entity_w.items()]
            rows = self._rows(tx, self._q.kg_scores, entities=entities, skip=skip, n=n, sources=self._sources)
            scores = [(r[0], float(r[1])) for r in rows]
            cands = [c for c, _ in scores]
            return scores, self._paths(tx, seeds, cands, PATHS_PER_CANDIDATE, max_entity_items, seed_links=read)

        scores, paths = self._read(work)
        return [
            Candidate(item_id=cand, score=score, sources={"kg": score}, paths=tuple(paths[cand]))
            for cand, score in scores
        ]

    def paths(self, user_items: Sequence[str], item_id: str, n: int = 5) -> list[KGPath]:
        """Paths ``user item → shared entity → item_id``, highest weight (rarity) first, at most ``n``.

        Every user item weighs 1 and no entity is left out for being common (common ones just weigh little).
        """
        return self.paths_many(user_items, [item_id], n)[item_id]

    def paths_many(self, user_items: Sequence[str], item_ids: Sequence[str], n: int = 5) -> dict[str, list[KGPath]]:
        """:meth:`paths` for each of ``item_ids`` in one read transaction; every asked id is a key."""
        ids = unique(item_ids)
        out: dict[str, list[KGPath]] = {i: [] for i in ids}
        seeds = unique(user_items)
        if not ids or not seeds or n <= 0:
            return out

        def work(tx: Any) -> dict[str, list[KGPath]]:  # ``rank_paths`` drops paths that start at the item itself
            return self._paths(tx, dict.fromkeys(seeds, 1.0), ids, n, NO_LIMIT)

        out.update(self._read(work))
        return out

    # --- counts -------------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counts of ``items``, ``entities``, ``facts``, ``users`` and ``interactions`` (of every fact and entity,
        whatever ``fact_sources`` says)."""
        row = self._read(lambda tx: self._rows(tx, _STATS))[0]
        return {k: int(v) for k, v in zip(("items", "entities", "facts", "users", "interactions"), row, strict=True)}


def _describe(params: Mapping[str, Any]) -> str:
    """Parameters for a DEBUG log line: lists shown by length only."""
    return ", ".join(f"{k}=[{len(v)} rows]" if isinstance(v, list) else f"{k}={v!r}" for k, v in params.items())
