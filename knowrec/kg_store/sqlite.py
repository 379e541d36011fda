"""Embedded graph store on SQLite (stdlib :mod:`sqlite3` only).

Everything lives in one database file: items, entities, facts, users, interactions and a small table of entity
degrees (``entity_df``: how many stored items each entity is linked to) that makes rarity weighting cheap. Each fact
keeps its ``source`` (``dataset``, ``llm``) and its provenance (JSON, ``''`` when none).

A store opened with ``fact_sources`` reads facts through a TEMP VIEW ``_vfacts`` (the facts whose source is in the
TEMP table ``_sources``) and degrees from a TEMP table ``_vdf``, counted over those facts and counted again after a
write; an unfiltered store reads ``facts`` and ``entity_df`` directly, as before.

All SQL of this backend is in this module and uses placeholders only; the only things ever formatted into a statement
are a generated ``?,?,?`` list and the constant names of those tables (``facts`` or ``_vfacts``, ``entity_df`` or
``_vdf``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from knowrec.errors import InvalidInput, StoreUnavailable
from knowrec.kg_store._common import (
    NO_LIMIT,
    PATHS_PER_CANDIDATE,
    WRITE_CHUNK,
    LinkIndex,
    attributes_json,
    check_batch_size,
    check_fact_sources,
    check_known_items,
    chunks,
    endpoint_labels,
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

__all__ = ["SCHEMA_VERSION", "SQLiteGraphStore"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3
"""Stored in ``PRAGMA user_version``. Versions 1 (facts without ``source`` and ``provenance``) and 2 (interactions
without ``seq``, the write order of equal timestamps) are migrated on open; a database with any other non-zero
version is refused."""

_IN_CHUNK = 500
"""Ids per generated ``IN (?,?,…)`` list (well below SQLite's variable limit)."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS items (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        text TEXT NOT NULL DEFAULT '',
        attributes TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE IF NOT EXISTS entities (
        id TEXT PRIMARY KEY,
        label TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS facts (
        id TEXT PRIMARY KEY,
        head TEXT NOT NULL,
        relation TEXT NOT NULL,
        tail TEXT NOT NULL,
        head_label TEXT NOT NULL DEFAULT '',
        tail_label TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT 'dataset',
        provenance TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID""",
    # (head, tail) and (tail, head): covering for the item <-> entity hops of kg_candidates.
    "CREATE INDEX IF NOT EXISTS facts_head ON facts(head, tail)",
    "CREATE INDEX IF NOT EXISTS facts_tail ON facts(tail, head)",
    "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS interactions (
        user_id TEXT NOT NULL REFERENCES users(id),
        item_id TEXT NOT NULL REFERENCES items(id),
        rating REAL,
        ts INTEGER,
        seq INTEGER,
        PRIMARY KEY (user_id, item_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS interactions_item ON interactions(item_id)",
    "CREATE INDEX IF NOT EXISTS interactions_seq ON interactions(seq)",
    """CREATE TABLE IF NOT EXISTS entity_df (
        entity TEXT PRIMARY KEY,
        df INTEGER NOT NULL
    ) WITHOUT ROWID""",
)
_TABLES = frozenset({"items", "entities", "facts", "users", "interactions", "entity_df"})

# Version 1 -> 2: every fact stored so far came with the data.
_MIGRATE_V1 = (
    "ALTER TABLE facts ADD COLUMN source TEXT NOT NULL DEFAULT 'dataset'",
    "ALTER TABLE facts ADD COLUMN provenance TEXT NOT NULL DEFAULT ''",
)

# v2 -> v3: interactions get ``seq``, the write order that breaks ties of equal timestamps. Rows stored before it
# have none (NULL): they count as written before every later row, and tie among themselves by item id.
_MIGRATE_V2 = (
    "ALTER TABLE interactions ADD COLUMN seq INTEGER",
    "CREATE INDEX IF NOT EXISTS interactions_seq ON interactions(seq)",
)

_TEMP_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS _touch (id TEXT PRIMARY KEY)",
    "CREATE TEMP TABLE IF NOT EXISTS _bitems (id TEXT PRIMARY KEY)",
    "CREATE TEMP TABLE IF NOT EXISTS _ends (id TEXT PRIMARY KEY, label TEXT NOT NULL)",
)

# Only for a store opened with ``fact_sources``: the facts it sees and their entities' degrees (see _FILL_VDF).
_FILTER_TEMP = (
    "CREATE TEMP TABLE IF NOT EXISTS _sources (source TEXT PRIMARY KEY) WITHOUT ROWID",
    """CREATE TEMP VIEW IF NOT EXISTS _vfacts AS
    SELECT * FROM main.facts WHERE source IN (SELECT source FROM temp._sources)""",
    "CREATE TEMP TABLE IF NOT EXISTS _vdf (entity TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID",
)

_FACTS, _DF = "facts", "entity_df"
_VFACTS, _VDF = "_vfacts", "_vdf"

# ``CROSS JOIN`` below fixes the join order (SQLite never reorders it), so that statements start from the few rows
# in a temp table and follow the indexes instead of scanning the facts.

# --- write statements -------------------------------------------------------------------------------------------

_UPSERT_ITEM = """
INSERT INTO items (id, title, text, attributes) VALUES (?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET title = excluded.title, text = excluded.text, attributes = excluded.attributes
WHERE items.title IS NOT excluded.title OR items.text IS NOT excluded.text
   OR items.attributes IS NOT excluded.attributes
"""

# A non-empty label is never replaced by an empty one; source and provenance stay as first stored.
_UPSERT_FACT = """
INSERT INTO facts (id, head, relation, tail, head_label, tail_label, source, provenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    head_label = CASE WHEN excluded.head_label <> '' THEN excluded.head_label ELSE facts.head_label END,
    tail_label = CASE WHEN excluded.tail_label <> '' THEN excluded.tail_label ELSE facts.tail_label END
WHERE (excluded.head_label <> '' AND excluded.head_label IS NOT facts.head_label)
   OR (excluded.tail_label <> '' AND excluded.tail_label IS NOT facts.tail_label)
"""

_INSERT_USER = "INSERT OR IGNORE INTO users (id) VALUES (?)"

# A new timestamp moves the interaction to the end of the write order; a new rating alone leaves it where it was.
_UPSERT_INTERACTION = """
INSERT INTO interactions (user_id, item_id, rating, ts, seq) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (user_id, item_id) DO UPDATE SET
    rating = excluded.rating,
    seq = CASE WHEN interactions.ts IS excluded.ts THEN interactions.seq ELSE excluded.seq END,
    ts = excluded.ts
WHERE interactions.rating IS NOT excluded.rating OR interactions.ts IS NOT excluded.ts
"""

_LAST_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM interactions"

# Endpoints of the batch's facts that are not items become entities (label: non-empty wins).
_UPSERT_ENTITIES = """
INSERT INTO entities (id, label)
SELECT e.id, e.label FROM _ends AS e WHERE NOT EXISTS (SELECT 1 FROM items AS i WHERE i.id = e.id)
ON CONFLICT (id) DO UPDATE SET label = excluded.label
WHERE excluded.label <> '' AND excluded.label IS NOT entities.label
"""

# Entities whose df may have changed: endpoints of the batch's facts (already in _touch), the batch's items
# (an entity id may have become an item) and the other endpoints of every stored fact touching a batch item.
_TOUCH_FROM_ITEMS = """
INSERT OR IGNORE INTO _touch (id)
SELECT id FROM _bitems
UNION SELECT f.tail FROM _bitems AS b CROSS JOIN facts AS f ON f.head = b.id
UNION SELECT f.head FROM _bitems AS b CROSS JOIN facts AS f ON f.tail = b.id
"""

# Entities among the endpoints of retracted facts (in _touch) that no fact names any more.
_DROP_BARE_ENTITIES = """
DELETE FROM entities WHERE id IN (SELECT id FROM _touch)
    AND NOT EXISTS (SELECT 1 FROM facts AS f WHERE f.tail = entities.id)
    AND NOT EXISTS (SELECT 1 FROM facts AS f WHERE f.head = entities.id)
"""

_RECOMPUTE_DF = """
INSERT INTO entity_df (entity, df)
SELECT entity, COUNT(DISTINCT item) FROM (
    SELECT f.tail AS entity, f.head AS item
    FROM _touch AS t CROSS JOIN entities AS e ON e.id = t.id
    CROSS JOIN facts AS f ON f.tail = t.id CROSS JOIN items AS i ON i.id = f.head
    UNION ALL
    SELECT f.head AS entity, f.tail AS item
    FROM _touch AS t CROSS JOIN entities AS e ON e.id = t.id
    CROSS JOIN facts AS f ON f.head = t.id CROSS JOIN items AS i ON i.id = f.tail
)
GROUP BY entity
"""

# The degrees of every entity over the facts a filtered store sees (a whole count, like _RECOMPUTE_DF's).
_FILL_VDF = """
INSERT INTO _vdf (entity, df)
SELECT entity, COUNT(DISTINCT item) FROM (
    SELECT f.tail AS entity, f.head AS item
    FROM _vfacts AS f CROSS JOIN entities AS e ON e.id = f.tail CROSS JOIN items AS i ON i.id = f.head
    UNION ALL
    SELECT f.head AS entity, f.tail AS item
    FROM _vfacts AS f CROSS JOIN entities AS e ON e.id = f.head CROSS JOIN items AS i ON i.id = f.tail
)
GROUP BY entity
"""

# --- read statements --------------------------------------------------------------------------------------------

_FACT_COLUMNS = """
    f.id, f.head, f.relation, f.tail,
    COALESCE(NULLIF(hi.title, ''), NULLIF(he.label, ''), f.head_label),
    COALESCE(NULLIF(ti.title, ''), NULLIF(te.label, ''), f.tail_label),
    f.source, f.provenance
"""
_FACT_LABEL_JOINS = """
    LEFT JOIN items AS hi ON hi.id = f.head LEFT JOIN entities AS he ON he.id = f.head
    LEFT JOIN items AS ti ON ti.id = f.tail LEFT JOIN entities AS te ON te.id = f.tail
"""

# The read statements below name ``{facts}`` and ``{df}``: ``facts`` and ``entity_df``, or in a store opened with
# ``fact_sources`` the view ``_vfacts`` and the table ``_vdf`` (see SQLiteGraphStore.__init__).

# Every fact as (head, tail, id, relation, source): one scan of the table (reading them through the head and tail
# indexes, joined to the degrees, took 8 times longer), from which the in-memory links are built
# (knowrec.kg_store._common.LinkIndex).
_LINK_FACTS = "SELECT head, tail, id, relation, source FROM {facts}"

# A page of entities: id, label and stored (unfiltered) degree.
_ENTITY_PAGE = """
SELECT e.id, e.label, COALESCE(d.df, 0) FROM entities AS e LEFT JOIN entity_df AS d ON d.entity = e.id
WHERE e.id > ? ORDER BY e.id LIMIT ?
"""

# The relations of the facts linking an item to an entity with id in [?1, ?2] (every fact, whatever its source).
_ENTITY_RELATIONS = """
SELECT f.tail, f.relation FROM facts AS f CROSS JOIN entities AS e ON e.id = f.tail
CROSS JOIN items AS i ON i.id = f.head WHERE f.tail BETWEEN ?1 AND ?2
UNION
SELECT f.head, f.relation FROM facts AS f CROSS JOIN entities AS e ON e.id = f.head
CROSS JOIN items AS i ON i.id = f.tail WHERE f.head BETWEEN ?1 AND ?2
"""

_HISTORY = """
SELECT user_id, item_id, rating, ts FROM interactions WHERE user_id = ?
ORDER BY ts IS NULL, ts DESC, seq DESC, item_id DESC
LIMIT ?
"""

_INTERACTIONS_PAGE = """
SELECT user_id, item_id, rating, ts FROM interactions WHERE user_id >= ? AND user_id <= ?
ORDER BY user_id, ts, seq, item_id
"""

_SEARCH = """
SELECT i.id, i.title, i.text, i.attributes FROM items AS i
WHERE instr(kr_fold(i.title), ?) > 0
ORDER BY (SELECT COUNT(*) FROM interactions AS x WHERE x.item_id = i.id) DESC, i.id
LIMIT ?
"""

_POPULAR = "SELECT item_id, COUNT(*) AS c FROM interactions GROUP BY item_id ORDER BY c DESC, item_id"


def _fold(text: str | None) -> str:
    return text.casefold() if text is not None else ""


def _marks(n: int) -> str:
    """A ``?,?,?`` placeholder list of length ``n``."""
    return ",".join("?" * n)


class SQLiteGraphStore:
    """A :class:`~knowrec.kg_store.base.GraphStore` in one SQLite file (WAL mode), or in memory.

    The database is opened lazily on first use (:meth:`verify` opens it on purpose). One connection is shared by
    all threads; every operation holds a lock, so the store can be used from a threaded server.

    Args:
        path: Database file (its folder is created if missing), or ``":memory:"`` for a throw-away store.
        fact_sources: Read only the facts whose ``source`` is one of these (``None``: every fact). Every read that
            uses facts (:meth:`facts`, :meth:`item_entities`, :meth:`entity_degrees`, :meth:`kg_candidates`,
            :meth:`paths`, :meth:`paths_many`) then answers as a store holding only those facts would, entity
            degrees included; :meth:`get_facts`, :meth:`iter_entities` and :meth:`stats` see everything, and writes
            are not affected.

    Example:
        >>> from knowrec.types import Fact, Interaction, Item
        >>> store = SQLiteGraphStore(":memory:")
        >>> store.write(GraphBatch(
        ...     items=[Item(id="1", title="Toy Story"), Item(id="2", title="Toy Story 2")],
        ...     facts=[Fact(head="1", relation="director", tail="p:lasseter", tail_label="John Lasseter"),
        ...            Fact(head="2", relation="director", tail="p:lasseter", tail_label="John Lasseter")],
        ...     interactions=[Interaction(user_id="u1", item_id="1", rating=5.0, timestamp=10)],
        ... ))
        WriteStats(items=2, facts=2, interactions=1, retracted=0)
        >>> [(c.item_id, round(c.score, 3)) for c in store.kg_candidates({"1": 1.0}, exclude=set(), n=5)]
        [('2', 0.693)]
        >>> store.kg_candidates({"1": 1.0}, exclude=set(), n=5)[0].paths[0].entity_label
        'John Lasseter'
        >>> store.stats()
        {'items': 2, 'entities': 1, 'facts': 2, 'users': 1, 'interactions': 1}
        >>> store.close()
    """

    def __init__(self, path: Path | str, fact_sources: Collection[str] | None = None) -> None:
        self.fact_sources: frozenset[str] | None = check_fact_sources(fact_sources)
        self._memory = str(path) == ":memory:"
        self.path: Path | str = ":memory:" if self._memory else Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._writes = 0
        self._popular_cache: tuple[tuple[int, int], list[tuple[str, int]]] | None = None
        self._stats_cache: tuple[tuple[int, int], dict[str, int]] | None = None
        self._graph_writes = 0  # writes that changed items or facts (interactions alone leave the links as they are)
        self._links_cache: tuple[tuple[int, int], LinkIndex] | None = None
        self._vdf_generation: tuple[int, int] | None = None  # when _vdf was last counted (filtered stores)
        names = {"facts": _FACTS, "df": _DF} if self.fact_sources is None else {"facts": _VFACTS, "df": _VDF}
        self._facts_table, self._df_table = names["facts"], names["df"]
        self._link_facts = _LINK_FACTS.format(**names)

    def __repr__(self) -> str:
        if self.fact_sources is None:
            return f"SQLiteGraphStore({str(self.path)!r})"
        return f"SQLiteGraphStore({str(self.path)!r}, fact_sources={sorted(self.fact_sources)!r})"

    # --- connection ---------------------------------------------------------------------------------------------

    def verify(self) -> None:
        """Open the database (creating it and its schema if new) and check the schema.

        Raises:
            StoreUnavailable: The file cannot be opened or created, is not a SQLite database, or holds another
                schema. The message names the path.
        """
        with self._lock:
            self._connection()

    def _unavailable(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"graph store at {self.path}: {why}")

    def _connection(self) -> sqlite3.Connection:
        """The open connection (opened and checked on first use). Call with the lock held."""
        if self._conn is not None:
            return self._conn
        if self._closed:
            raise self._unavailable("the store is closed")
        target = ":memory:"
        if not self._memory:
            assert isinstance(self.path, Path)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise self._unavailable(f"cannot create folder {str(self.path.parent)!r}: {e}") from e
            target = str(self.path)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.create_function("kr_fold", 1, _fold, deterministic=True)
            self._init_schema(conn)
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            raise self._unavailable(f"cannot open: {e}") from e
        except StoreUnavailable:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn
        logger.debug("opened graph store %s", self.path)
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -65536")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and tables:
            raise self._unavailable(f"not a knowrec graph store (has tables {sorted(tables)[:5]})")
        if version not in (0, 1, 2, SCHEMA_VERSION):
            raise self._unavailable(f"schema version {version}, this knowrec reads version {SCHEMA_VERSION}")
        if version != 0 and (missing := _TABLES - tables):
            raise self._unavailable(f"schema v{version} lacks tables {sorted(missing)}")
        if not self._memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("graph store %s: journal mode is %s, not WAL", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
        if version == 0:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql in _SCHEMA:
                    conn.execute(sql)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            logger.info("created graph store schema v%d in %s", SCHEMA_VERSION, self.path)
        elif version in (1, 2):
            self._migrate(conn, version)
        for sql in _TEMP_TABLES:
            conn.execute(sql)
        if self.fact_sources is not None:
            for sql in _FILTER_TEMP:
                conn.execute(sql)
            conn.execute("DELETE FROM _sources")
            conn.executemany("INSERT INTO _sources (source) VALUES (?)", [(s,) for s in sorted(self.fact_sources)])
            self._vdf_generation = None

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Schema v1 or v2 -> v3 in one transaction. v1 -> v2: facts get ``source`` (``dataset``) and ``provenance``
        (``''``); v2 -> v3: interactions get ``seq`` (the write order of equal timestamps; NULL for the rows there)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = conn.execute("PRAGMA user_version").fetchone()[0]
            migrate = now == version  # not done meanwhile by another process
            if migrate:
                for sql in (_MIGRATE_V1 if version == 1 else ()) + _MIGRATE_V2:
                    conn.execute(sql)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if migrate:
            logger.info("migrated graph store %s from schema v%d to v%d", self.path, version, SCHEMA_VERSION)

    def close(self) -> None:
        """Close the connection. Safe to call twice; later use raises :class:`StoreUnavailable`."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and the connection; SQLite failures (locked, I/O, corrupt) become :class:`StoreUnavailable`.

        Integrity, programming and data errors are left as they are: they point at a bug, not at the database.
        """
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError):
                raise
            except sqlite3.DatabaseError as e:
                raise self._unavailable(str(e)) from e

    @staticmethod
    def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("SQL %s %s", one_line(sql), _short(params))
        return conn.execute(sql, params)

    @staticmethod
    def _executemany(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("SQL %s [%d rows]", one_line(sql), len(rows))
        conn.executemany(sql, rows)

    def _fill(self, conn: sqlite3.Connection, table: str, rows: Iterable[Sequence[Any]], width: int = 1) -> None:
        """Empty a temp table and fill it (``table`` is one of the constant names above)."""
        self._execute(conn, f"DELETE FROM {table}")
        rows = list(rows)
        if rows:
            self._executemany(conn, f"INSERT OR IGNORE INTO {table} VALUES ({_marks(width)})", rows)

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
            StoreUnavailable: The database cannot be opened or written.
        """
        with self._db() as conn:
            self._execute(conn, "BEGIN IMMEDIATE")
            try:
                stats = self._write(conn, batch, progress)
                self._execute(conn, "COMMIT")
            except BaseException:
                if conn.in_transaction:
                    self._execute(conn, "ROLLBACK")
                raise
            finally:
                self._writes += 1
                if batch.items or batch.facts or batch.retract:
                    self._graph_writes += 1
        logger.info("graph store %s: wrote %s", self.path, stats)
        return stats

    def _count(self, conn: sqlite3.Connection, table: str) -> int:
        return int(self._execute(conn, f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def _write(self, conn: sqlite3.Connection, batch: GraphBatch, progress: Progress | None) -> WriteStats:
        batch_item_ids = {item.id for item in batch.items}
        check_known_items(
            (x for x in batch.interactions if x.item_id not in batch_item_ids), lambda ids: self._has_items(conn, ids)
        )

        retracted = self._retract(conn, batch.retract) if batch.retract else 0
        before = {t: self._count(conn, t) for t in ("items", "facts", "interactions")}

        for chunk in chunks(batch.items, WRITE_CHUNK):
            rows = [(it.id, it.title, it.text, attributes_json(it)) for it in chunk]
            self._executemany(conn, _UPSERT_ITEM, rows)
            if progress is not None:
                progress("items", len(chunk))

        for fchunk in chunks(batch.facts, WRITE_CHUNK):
            frows = [
                (f.id, f.head, f.relation, f.tail, f.head_label, f.tail_label, f.source, provenance_json(f))
                for f in fchunk
            ]
            self._executemany(conn, _UPSERT_FACT, frows)
            if progress is not None:
                progress("facts", len(fchunk))

        if batch.items or batch.facts:
            self._update_entities(conn, batch, batch_item_ids)

        # seq: the write order, which breaks ties of equal timestamps (the order the data gave them in)
        seq = int(self._execute(conn, _LAST_SEQ).fetchone()[0]) if batch.interactions else 0
        for ichunk in chunks(batch.interactions, WRITE_CHUNK):
            self._executemany(conn, _INSERT_USER, [(u,) for u in unique(x.user_id for x in ichunk)])
            irows = [(x.user_id, x.item_id, x.rating, x.timestamp, seq + n) for n, x in enumerate(ichunk, 1)]
            seq += len(ichunk)
            try:
                self._executemany(conn, _UPSERT_INTERACTION, irows)
            except sqlite3.IntegrityError as e:  # the check above should have caught it
                raise InvalidInput(f"interaction rejected by the store: {e}", field="item_id") from e
            if progress is not None:
                progress("interactions", len(ichunk))

        after = {t: self._count(conn, t) for t in ("items", "facts", "interactions")}
        return WriteStats(**{t: after[t] - before[t] for t in before}, retracted=retracted)

    def _retract(self, conn: sqlite3.Connection, retract: Sequence[Retraction]) -> int:
        """Delete the facts stored with the source each retraction names; recompute the degrees of their endpoints
        and drop the entities left with no fact. Returns how many facts went."""
        wanted = {r.fact_id: r.source for r in retract}
        gone: list[str] = []
        ends: set[str] = set()
        for chunk in chunks(list(wanted), _IN_CHUNK):
            sql = f"SELECT id, head, tail, source FROM facts WHERE id IN ({_marks(len(chunk))})"
            for fid, head, tail, source in self._execute(conn, sql, chunk):
                if source == wanted[fid]:
                    gone.append(fid)
                    ends.update((head, tail))
        for chunk in chunks(gone, _IN_CHUNK):
            self._execute(conn, f"DELETE FROM facts WHERE id IN ({_marks(len(chunk))})", chunk)
        if gone:
            self._fill(conn, "_touch", ((node,) for node in ends))
            self._execute(conn, _DROP_BARE_ENTITIES)
            self._execute(conn, "DELETE FROM entity_df WHERE entity IN (SELECT id FROM _touch)")
            self._execute(conn, _RECOMPUTE_DF)
            self._execute(conn, "DELETE FROM _touch")
        return len(gone)

    def _update_entities(self, conn: sqlite3.Connection, batch: GraphBatch, batch_item_ids: set[str]) -> None:
        """Upsert the batch's entities and recompute ``entity_df`` for every entity the batch may have changed."""
        labels = endpoint_labels(batch.facts)
        self._fill(conn, "_bitems", ((i,) for i in batch_item_ids))
        # An id that is now an item is no longer an entity.
        self._execute(conn, "DELETE FROM entities WHERE id IN (SELECT id FROM _bitems)")
        self._fill(conn, "_ends", labels.items(), width=2)
        self._execute(conn, _UPSERT_ENTITIES)
        self._fill(conn, "_touch", ((node,) for node in labels))
        self._execute(conn, _TOUCH_FROM_ITEMS)
        self._execute(conn, "DELETE FROM entity_df WHERE entity IN (SELECT id FROM _touch)")
        self._execute(conn, _RECOMPUTE_DF)
        for table in ("_bitems", "_ends", "_touch"):
            self._execute(conn, f"DELETE FROM {table}")

    # --- items --------------------------------------------------------------------------------------------------

    def _has_items(self, conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(unique(ids), _IN_CHUNK):
            sql = f"SELECT id FROM items WHERE id IN ({_marks(len(chunk))})"
            found.update(r[0] for r in self._execute(conn, sql, chunk))
        return found

    def has_items(self, item_ids: Sequence[str]) -> set[str]:
        """The subset of ``item_ids`` that are stored items."""
        with self._db() as conn:
            return self._has_items(conn, item_ids)

    def items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """Stored items by id, in the order asked (missing ids are left out)."""
        ids = unique(item_ids)
        found: dict[str, Item] = {}
        with self._db() as conn:
            for chunk in chunks(ids, _IN_CHUNK):
                sql = f"SELECT id, title, text, attributes FROM items WHERE id IN ({_marks(len(chunk))})"
                for row in self._execute(conn, sql, chunk):
                    found[row[0]] = item_from_row(row)
        return {i: found[i] for i in ids if i in found}

    def iter_items(self, batch_size: int = 1000) -> Iterator[list[Item]]:
        """All items in id order, in lists of ``batch_size`` (each page is read under the lock).

        Raises:
            InvalidInput: ``batch_size`` is below 1.
        """
        check_batch_size(batch_size)

        def page(last: str | None) -> list[Any]:
            with self._db() as conn:
                if last is None:
                    sql = "SELECT id, title, text, attributes FROM items ORDER BY id LIMIT ?"
                    return self._execute(conn, sql, (batch_size,)).fetchall()
                sql = "SELECT id, title, text, attributes FROM items WHERE id > ? ORDER BY id LIMIT ?"
                return self._execute(conn, sql, (last, batch_size)).fetchall()

        for rows in keyset_pages(page, batch_size, lambda rows: rows[-1][0]):
            yield [item_from_row(r) for r in rows]

    def search_items(self, text: str, n: int = 10) -> list[Item]:
        """Items whose title contains ``text`` (case-insensitive, Unicode case folding), most interacted first."""
        if n <= 0:
            return []
        with self._db() as conn:
            rows = self._execute(conn, _SEARCH, (text.casefold(), n)).fetchall()
        return [item_from_row(r) for r in rows]

    # --- interactions -------------------------------------------------------------------------------------------

    def history(self, user_id: str, n: int | None = None) -> list[Interaction]:
        """The user's interactions, most recent first; no timestamp counts as oldest; equal timestamps: the one written
        last first (rows from before schema v3, which kept no write order, after those and by item id descending)."""
        if n is not None and n <= 0:
            return []
        with self._db() as conn:
            rows = self._execute(conn, _HISTORY, (user_id, -1 if n is None else n)).fetchall()
        return [interaction_from_row(r) for r in rows]

    def interactions(self) -> Iterator[Interaction]:
        """Every interaction in (user, timestamp, write order) order; missing timestamps first within a user.

        Read in pages of users, each under the lock, so a concurrent write may show up between pages.
        """
        page_users = 1000

        def page(last: str | None) -> tuple[list[Any], list[Any]]:
            with self._db() as conn:
                if last is None:
                    users = self._execute(conn, "SELECT id FROM users ORDER BY id LIMIT ?", (page_users,)).fetchall()
                else:
                    users = self._execute(
                        conn, "SELECT id FROM users WHERE id > ? ORDER BY id LIMIT ?", (last, page_users)
                    ).fetchall()
                if not users:
                    return [], []
                return users, self._execute(conn, _INTERACTIONS_PAGE, (users[0][0], users[-1][0])).fetchall()

        for _, rows in keyset_pages(page, page_users, lambda p: p[0][-1][0], size=lambda p: len(p[0])):
            for row in rows:
                yield interaction_from_row(row)

    def popular(self, n: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, int]]:
        """Most-interacted items as ``(item_id, count)``, ties by item id ascending; excluded ids left out."""
        if n <= 0:
            return []
        with self._db() as conn:
            generation = (int(conn.execute("PRAGMA data_version").fetchone()[0]), self._writes)
            if self._popular_cache is None or self._popular_cache[0] != generation:
                counts = [(r[0], int(r[1])) for r in self._execute(conn, _POPULAR)]
                self._popular_cache = (generation, counts)
            counts = self._popular_cache[1]
        return top_popular(counts, n, exclude)

    # --- facts --------------------------------------------------------------------------------------------------

    def _generation(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """Changes when items or facts may have changed: a write of them here, or any commit elsewhere."""
        return int(conn.execute("PRAGMA data_version").fetchone()[0]), self._graph_writes

    def _ready_df(self, conn: sqlite3.Connection) -> None:
        """In a store opened with ``fact_sources``: count ``_vdf`` again if items or facts may have changed."""
        if self.fact_sources is None:
            return
        generation = self._generation(conn)
        if self._vdf_generation == generation:
            return
        self._execute(conn, "DELETE FROM _vdf")
        self._execute(conn, _FILL_VDF)
        self._vdf_generation = generation

    def facts(self, item_ids: Sequence[str], n: int | None = None) -> dict[str, list[Fact]]:
        """Each item's own facts (head or tail), rarest other endpoint first, at most ``n`` per item.

        Order: degree (``df``) of the other endpoint ascending (an endpoint that is an item counts as ``df`` 1),
        then relation, then fact id. Every asked id is a key (an empty list when it has no facts). Labels are
        filled from the stored items and entities; ``source`` and ``provenance`` as stored. With ``fact_sources``
        only those facts count, for the degrees too.
        """
        ids = unique(item_ids)
        out: dict[str, list[Fact]] = {i: [] for i in ids}
        if n is not None and n <= 0:
            return out
        facts, df = self._facts_table, self._df_table
        with self._db() as conn:
            self._ready_df(conn)
            rows: list[Any] = []
            for chunk in chunks(ids, _IN_CHUNK):
                marks = _marks(len(chunk))
                sql = f"""
                SELECT x.item, x.fid, x.relation, COALESCE(d.df, 1) FROM (
                    SELECT head AS item, tail AS other, id AS fid, relation FROM {facts} WHERE head IN ({marks})
                    UNION
                    SELECT tail, head, id, relation FROM {facts} WHERE tail IN ({marks})
                ) AS x LEFT JOIN {df} AS d ON d.entity = x.other
                """
                rows.extend(self._execute(conn, sql, [*chunk, *chunk]))
            ranked = rank_facts(rows, ids, n)
            found = self._get_facts(conn, [fid for fids in ranked.values() for fid in fids])
        for item_id, fids in ranked.items():
            out[item_id] = [found[fid] for fid in fids if fid in found]
        return out

    def _get_facts(self, conn: sqlite3.Connection, fact_ids: Sequence[str]) -> dict[str, Fact]:
        found: dict[str, Fact] = {}
        for chunk in chunks(unique(fact_ids), _IN_CHUNK):
            sql = f"SELECT {_FACT_COLUMNS} FROM facts AS f {_FACT_LABEL_JOINS} WHERE f.id IN ({_marks(len(chunk))})"
            for row in self._execute(conn, sql, chunk):
                found[row[0]] = fact_from_row(row)
        return found

    def get_facts(self, fact_ids: Sequence[str]) -> dict[str, Fact]:
        """Facts by id, in the order asked (missing ids left out); labels filled from the stored nodes.

        Not filtered by ``fact_sources``: a fact asked for by id is returned whatever its source.
        """
        ids = unique(fact_ids)
        with self._db() as conn:
            found = self._get_facts(conn, ids)
        return {i: found[i] for i in ids if i in found}

    def item_entities(self, item_ids: Sequence[str]) -> dict[str, set[str]]:
        """Entity ids linked to each item by a fact (of ``fact_sources``) in either direction; every asked id is a
        key."""
        ids = unique(item_ids)
        out: dict[str, set[str]] = {i: set() for i in ids}
        facts = self._facts_table
        with self._db() as conn:
            for chunk in chunks(ids, _IN_CHUNK):
                marks = _marks(len(chunk))
                sql = f"""
                SELECT f.head, f.tail FROM {facts} AS f JOIN entities AS e ON e.id = f.tail WHERE f.head IN ({marks})
                UNION
                SELECT f.tail, f.head FROM {facts} AS f JOIN entities AS e ON e.id = f.head WHERE f.tail IN ({marks})
                """
                for item_id, entity in self._execute(conn, sql, [*chunk, *chunk]):
                    out[item_id].add(entity)
        return out

    def entity_degrees(self, entity_ids: Sequence[str]) -> dict[str, int]:
        """How many stored items each entity is linked to (``entity_df``; with ``fact_sources``, by those facts);
        0 for an unknown id."""
        ids = unique(entity_ids)
        out = dict.fromkeys(ids, 0)
        with self._db() as conn:
            self._ready_df(conn)
            for chunk in chunks(ids, _IN_CHUNK):
                sql = f"SELECT entity, df FROM {self._df_table} WHERE entity IN ({_marks(len(chunk))})"
                for entity, df in self._execute(conn, sql, list(chunk)):
                    out[entity] = int(df)
        return out

    def iter_entities(self, batch_size: int = 5000) -> Iterator[list[Entity]]:
        """Every stored entity in id order, in lists of ``batch_size`` (each page is read under the lock).

        Each has its label, the sorted distinct relations of the facts linking an item to it and its stored degree.
        Not filtered by ``fact_sources``: every fact counts.

        Raises:
            InvalidInput: ``batch_size`` is below 1.
        """
        check_batch_size(batch_size)

        def page(last: str | None) -> list[Entity]:
            with self._db() as conn:  # every entity id is non-empty (facts refuse empty endpoints)
                rows = self._execute(conn, _ENTITY_PAGE, ("" if last is None else last, batch_size)).fetchall()
                relations: dict[str, set[str]] = {}
                if rows:
                    for entity, relation in self._execute(conn, _ENTITY_RELATIONS, (rows[0][0], rows[-1][0])):
                        relations.setdefault(entity, set()).add(relation)
            return [
                Entity(id=e, label=label, relations=tuple(sorted(relations.get(e, ()))), degree=int(df))
                for e, label, df in rows
            ]

        yield from keyset_pages(page, batch_size, lambda entities: entities[-1].id)

    # --- knowledge-graph retrieval ------------------------------------------------------------------------------

    def _paths(
        self,
        conn: sqlite3.Connection,
        seeds: Mapping[str, float],
        targets: Sequence[str],
        per_target: int,
        max_degree: int,
    ) -> dict[str, list[KGPath]]:
        """The ``per_target`` heaviest paths of each target from ``seeds`` (through entities linked to at most
        ``max_degree`` items): the links read from the in-memory copy, ranked by
        :func:`~knowrec.kg_store._common.rank_paths`."""
        if not targets or not seeds:
            return {t: [] for t in targets}
        index = self._links(conn)
        links = index.seed_links(seeds, max_degree)
        target_links = index.target_links(targets, {s.entity for s in links})
        return rank_paths(
            seeds,
            links,
            target_links,
            targets,
            n_items=len(index.items),
            per_target=per_target,
            max_degree=max_degree,
        )

    def _links(self, conn: sqlite3.Connection) -> LinkIndex:
        """The item–entity links, read again after a write of items or facts (here) or any write elsewhere."""
        generation = self._generation(conn)
        if self._links_cache is None or self._links_cache[0] != generation:
            self._ready_df(conn)
            items = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY id")]
            degrees = conn.execute(
                f"SELECT d.entity, COALESCE(e.label, ''), d.df FROM {self._df_table} AS d "
                "LEFT JOIN entities AS e ON e.id = d.entity ORDER BY d.entity"
            ).fetchall()
            self._links_cache = (generation, LinkIndex(items, degrees, conn.execute(self._link_facts)))
        return self._links_cache[1]

    def warm_up(self) -> None:
        """Build the in-memory item–entity links now (``kg_candidates`` builds them when first needed: a few
        seconds per million facts)."""
        with self._db() as conn:
            self._links(conn)

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
        with self._db() as conn:
            scores = self._links(conn).scores(seed_items, exclude, n, max_entity_items)
            paths = self._paths(conn, seeds, [c for c, _ in scores], PATHS_PER_CANDIDATE, max_entity_items)
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
        """:meth:`paths` for each of ``item_ids`` (a seed is never its own path); every asked id is a key."""
        ids = unique(item_ids)
        out: dict[str, list[KGPath]] = {i: [] for i in ids}
        seeds = unique(user_items)
        if not ids or not seeds or n <= 0:
            return out
        with self._db() as conn:  # a path never starts at the item itself (``rank_paths`` drops seed = target)
            out.update(self._paths(conn, dict.fromkeys(seeds, 1.0), ids, n, NO_LIMIT))
        return out

    # --- counts -------------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counts of ``items``, ``entities``, ``facts``, ``users`` and ``interactions`` (of every fact and entity,
        whatever ``fact_sources`` says).

        Counted again only after a write (by this store or, per ``PRAGMA data_version``, another connection):
        ``COUNT(*)`` walks a whole table (60 ms for 2M interactions and 1M facts), and every recommendation and
        chat turn asks."""
        with self._db() as conn:
            generation = (int(conn.execute("PRAGMA data_version").fetchone()[0]), self._writes)
            if self._stats_cache is None or self._stats_cache[0] != generation:
                counts = {t: self._count(conn, t) for t in ("items", "entities", "facts", "users", "interactions")}
                self._stats_cache = (generation, counts)
            return dict(self._stats_cache[1])


def _short(params: Sequence[Any], limit: int = 8) -> str:
    shown = list(params[:limit])
    return repr(shown) + (f" … ({len(params)} params)" if len(params) > limit else "")
