"""Tests specific to :class:`knowrec.kg_store.sqlite.SQLiteGraphStore` (the contract is in test_graph_contract)."""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from pathlib import Path

import pytest

from knowrec.errors import StoreUnavailable
from knowrec.kg_store.base import GraphBatch, WriteStats
from knowrec.kg_store.sqlite import SCHEMA_VERSION, SQLiteGraphStore
from knowrec.types import Fact, Interaction, Item, Provenance, fact_id

pytestmark = pytest.mark.integration  # database files on disk (tmp_path)


def test_persists_across_reopen(tmp_path: Path, tiny_kg: GraphBatch) -> None:
    path = tmp_path / "sub" / "dir" / "kg.sqlite"  # folders are created
    store = SQLiteGraphStore(path)
    store.write(tiny_kg)
    stats = store.stats()
    history = store.history("u1")
    store.close()

    again = SQLiteGraphStore(str(path))
    assert again.stats() == stats
    assert again.history("u1") == history
    assert again.write(tiny_kg) == WriteStats(0, 0, 0)
    assert [c.item_id for c in again.kg_candidates({"m1": 1.0}, set(), 3, max_entity_items=4)] == ["m2", "m3", "m4"]
    again.close()


def test_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "kg.sqlite"
    SQLiteGraphStore(path).verify()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"items", "entities", "facts", "users", "interactions", "entity_df"} <= tables
    finally:
        conn.close()


def test_constructor_does_no_io(tmp_path: Path) -> None:
    path = tmp_path / "later" / "kg.sqlite"
    store = SQLiteGraphStore(path)
    assert not path.parent.exists()
    store.verify()
    assert path.exists()
    store.close()


def test_verify_unwritable_path_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    path = blocker / "sub" / "kg.sqlite"
    store = SQLiteGraphStore(path)
    with pytest.raises(StoreUnavailable, match=re.escape(str(path))):
        store.verify()
    with pytest.raises(StoreUnavailable):  # every operation says the same
        store.stats()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a sqlite database at all, just bytes" * 100)
    with pytest.raises(StoreUnavailable, match=r"junk\.sqlite"):
        SQLiteGraphStore(path).verify()


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (x INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreUnavailable, match="not a knowrec graph store"):
        SQLiteGraphStore(path).verify()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kg.sqlite"
    SQLiteGraphStore(path).verify()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreUnavailable, match="schema version"):
        SQLiteGraphStore(path).verify()


def test_use_after_close(tiny_kg: GraphBatch) -> None:
    store = SQLiteGraphStore(":memory:")
    store.write(tiny_kg)
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.stats()


def test_memory_store(tiny_kg: GraphBatch) -> None:
    store = SQLiteGraphStore(":memory:")
    assert store.write(tiny_kg) == WriteStats(items=6, facts=20, interactions=9)
    assert store.stats()["entities"] == 8
    store.close()


def test_progress_chunks_of_5000() -> None:
    items = [Item(id=f"i{n:05d}", title=f"Item {n}") for n in range(12_000)]
    facts = [Fact(head=f"i{n:05d}", relation="tag", tail=f"t{n % 7}") for n in range(12_000)]
    calls: list[tuple[str, int]] = []
    store = SQLiteGraphStore(":memory:")
    store.write(GraphBatch(items=items, facts=facts), lambda stage, n: calls.append((stage, n)))
    assert calls == [
        ("items", 5000),
        ("items", 5000),
        ("items", 2000),
        ("facts", 5000),
        ("facts", 5000),
        ("facts", 2000),
    ]
    store.close()


def test_entity_that_becomes_an_item() -> None:
    store = SQLiteGraphStore(":memory:")
    store.write(
        GraphBatch(
            items=[Item(id="a", title="A"), Item(id="b", title="B")],
            facts=[
                Fact(head="a", relation="sequel_of", tail="c", tail_label="C?"),
                Fact(head="c", relation="genre", tail="g"),
                Fact(head="b", relation="genre", tail="g"),
            ],
        )
    )
    assert store.stats()["entities"] == 2  # c and g
    assert store.item_entities(["a"]) == {"a": {"c"}}
    store.write(GraphBatch(items=[Item(id="c", title="C")]))
    assert store.stats()["entities"] == 1
    assert store.item_entities(["a", "c"]) == {"a": set(), "c": {"g"}}
    # g is now linked to b and c: rarity log(1 + 3/2); c is a seed-candidate through g.
    (cand,) = store.kg_candidates({"b": 1.0}, set(), 5)
    assert cand.item_id == "c"
    assert cand.score == pytest.approx(math.log(1 + 3 / 2))
    store.close()


def test_item_to_item_fact_counts_as_rare() -> None:
    store = SQLiteGraphStore(":memory:")
    store.write(
        GraphBatch(
            items=[Item(id=i, title=i.upper()) for i in ("a", "b", "c")],
            facts=[
                Fact(head="a", relation="genre", tail="g"),
                Fact(head="b", relation="genre", tail="g"),
                Fact(head="c", relation="genre", tail="g"),
                Fact(head="a", relation="zz_sequel_of", tail="b"),
            ],
        )
    )
    assert [f.tail for f in store.facts(["a"])["a"]] == ["b", "g"]
    assert store.facts(["a", "missing"])["missing"] == []
    store.close()


def test_threads_share_one_store(tmp_path: Path, tiny_kg: GraphBatch) -> None:
    store = SQLiteGraphStore(tmp_path / "kg.sqlite")
    store.write(tiny_kg)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(50):
                assert store.kg_candidates({"m1": 1.0}, set(), 3, max_entity_items=4)[0].item_id == "m2"
                assert store.history("u1")[0].item_id == "m4"
        except BaseException as e:
            errors.append(e)

    def writer() -> None:
        try:
            for n in range(20):
                store.write(GraphBatch(interactions=[Interaction(user_id=f"w{n}", item_id="m6")]))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.stats()["interactions"] == 29
    store.close()


def test_second_connection_sees_writes(tmp_path: Path, tiny_kg: GraphBatch) -> None:
    path = tmp_path / "kg.sqlite"
    reader = SQLiteGraphStore(path)
    writer = SQLiteGraphStore(path)
    writer.write(tiny_kg)
    assert reader.popular(1) == [("m1", 3)]
    writer.write(GraphBatch(interactions=[Interaction(user_id=f"x{n}", item_id="m6") for n in range(5)]))
    assert reader.popular(1) == [("m6", 6)]  # the popularity cache notices the other connection's commit
    reader.close()
    writer.close()


def test_paths_follow_another_connections_writes(tmp_path: Path, tiny_kg: GraphBatch) -> None:
    """Paths and KG candidates come from an in-memory copy of the links: a fact another connection writes, and the
    label it gives an entity, show in the next answer."""
    path = tmp_path / "kg.sqlite"
    reader = SQLiteGraphStore(path)
    writer = SQLiteGraphStore(path)
    writer.write(tiny_kg)
    assert [p.entity for p in reader.paths(["m3"], "m6")] == ["p:w1"]  # builds the copy
    writer.write(GraphBatch(facts=[Fact(head="m6", relation="director", tail="p:d2", tail_label="Dir Two, renamed")]))
    paths = reader.paths(["m3"], "m6")
    # p:w1 links 2 items, p:d2 now 3: the rarer first
    assert [(p.entity, p.entity_label, p.target_relation) for p in paths] == [
        ("p:w1", "Writer W", "wrote"),
        ("p:d2", "Dir Two, renamed", "director"),
    ]
    (m6,) = [c for c in reader.kg_candidates({"m3": 1.0}, set(), 10) if c.item_id == "m6"]
    assert {p.entity for p in m6.paths} == {"p:d2", "p:w1"}
    reader.close()
    writer.close()


# The schema of version 1, as it was: facts without ``source`` and ``provenance``.
_V1_SCHEMA = (
    """CREATE TABLE items (
        id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL DEFAULT '', attributes TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE TABLE entities (id TEXT PRIMARY KEY, label TEXT NOT NULL DEFAULT '') WITHOUT ROWID",
    """CREATE TABLE facts (
        id TEXT PRIMARY KEY, head TEXT NOT NULL, relation TEXT NOT NULL, tail TEXT NOT NULL,
        head_label TEXT NOT NULL DEFAULT '', tail_label TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID""",
    "CREATE INDEX facts_head ON facts(head, tail)",
    "CREATE INDEX facts_tail ON facts(tail, head)",
    "CREATE TABLE users (id TEXT PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE interactions (
        user_id TEXT NOT NULL REFERENCES users(id), item_id TEXT NOT NULL REFERENCES items(id),
        rating REAL, ts INTEGER, PRIMARY KEY (user_id, item_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX interactions_item ON interactions(item_id)",
    "CREATE TABLE entity_df (entity TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID",
)

_V1_FACTS = [("a", "genre", "g", "A", "Gee"), ("b", "genre", "g", "B", "Gee"), ("c", "genre", "h", "C", "Aitch")]


def _v1_database(path: Path, skip: str = "", extra: tuple[str, ...] = ()) -> None:
    """A version-1 graph store written by hand: items a, b, c; entities g (a, b) and h (c); one interaction."""
    conn = sqlite3.connect(path)
    for sql in _V1_SCHEMA:
        if not skip or skip not in sql:
            conn.execute(sql)
    for sql in extra:
        conn.execute(sql)
    if not skip:
        conn.executemany("INSERT INTO items VALUES (?, ?, '', '{}')", [("a", "A"), ("b", "B"), ("c", "C")])
        conn.executemany("INSERT INTO entities VALUES (?, ?)", [("g", "Gee"), ("h", "Aitch")])
        conn.executemany(
            "INSERT INTO facts (id, head, relation, tail, head_label, tail_label) VALUES (?, ?, ?, ?, ?, ?)",
            [(fact_id(h, r, t), h, r, t, hl, tl) for h, r, t, hl, tl in _V1_FACTS],
        )
        conn.executemany("INSERT INTO entity_df VALUES (?, ?)", [("g", 2), ("h", 1)])
        conn.execute("INSERT INTO users VALUES ('u')")
        conn.execute("INSERT INTO interactions VALUES ('u', 'a', 4.0, 10)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def _facts_columns(path: Path) -> tuple[int, list[str]]:
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        return version, [r[1] for r in conn.execute("PRAGMA table_info(facts)")]
    finally:
        conn.close()


def test_v1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    _v1_database(path)
    store = SQLiteGraphStore(path)
    assert store.stats() == {"items": 3, "entities": 2, "facts": 3, "users": 1, "interactions": 1}
    version, columns = _facts_columns(path)
    assert version == SCHEMA_VERSION == 3
    assert columns[-2:] == ["source", "provenance"]
    ids = [fact_id(h, r, t) for h, r, t, _, _ in _V1_FACTS]
    got = store.get_facts(ids)
    assert list(got.values()) == [
        Fact(head=h, relation=r, tail=t, head_label=hl, tail_label=tl) for h, r, t, hl, tl in _V1_FACTS
    ]
    assert {(f.source, f.provenance) for f in got.values()} == {("dataset", None)}
    assert [f.id for f in store.facts(["a"])["a"]] == [ids[0]]
    (cand,) = store.kg_candidates({"a": 1.0}, set(), 5)
    assert (cand.item_id, cand.paths[0].extracted) == ("b", False)
    assert store.history("u") == [Interaction(user_id="u", item_id="a", rating=4.0, timestamp=10)]
    # The new columns take new facts.
    extracted = Fact(head="c", relation="genre", tail="g", source="llm", provenance=Provenance(model="m", evidence="e"))
    assert store.write(GraphBatch(facts=[extracted])) == WriteStats(facts=1)
    assert store.get_facts([extracted.id])[extracted.id] == Fact(
        head="c",
        relation="genre",
        tail="g",
        head_label="C",
        tail_label="Gee",
        source="llm",
        provenance=Provenance(model="m", evidence="e"),
    )
    store.close()
    # Opened again (as v3 now), and with a source filter: the old facts came with the data.
    again = SQLiteGraphStore(path, fact_sources={"dataset"})
    assert again.entity_degrees(["g", "h"]) == {"g": 2, "h": 1}
    assert [c.item_id for c in again.kg_candidates({"a": 1.0}, set(), 5)] == ["b"]
    again.close()
    assert _facts_columns(path) == (3, columns)
    assert _interaction_columns(path) == ["user_id", "item_id", "rating", "ts", "seq"]


def _interaction_columns(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[1] for r in conn.execute("PRAGMA table_info(interactions)")]
    finally:
        conn.close()


def _v2_database(path: Path) -> None:
    """A version-2 graph store: v1 with the facts' ``source`` and ``provenance``; interactions with no write order.
    User u has a (ts 10, from v1) and b, c (ts 20, written c first: v2 kept no order, so they tie by item id)."""
    _v1_database(path)
    conn = sqlite3.connect(path)
    for sql in (
        "ALTER TABLE facts ADD COLUMN source TEXT NOT NULL DEFAULT 'dataset'",
        "ALTER TABLE facts ADD COLUMN provenance TEXT NOT NULL DEFAULT ''",
    ):
        conn.execute(sql)
    conn.executemany("INSERT INTO interactions VALUES ('u', ?, NULL, 20)", [("c",), ("b",)])
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_v2_database_is_migrated_and_its_ties_stay_in_id_order(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    _v2_database(path)
    store = SQLiteGraphStore(path)
    assert store.stats()["interactions"] == 3
    assert _facts_columns(path)[0] == SCHEMA_VERSION
    assert _interaction_columns(path) == ["user_id", "item_id", "rating", "ts", "seq"]
    assert [x.item_id for x in store.history("u")] == ["c", "b", "a"]  # no write order kept: id descending
    # rows written from now on have one, and count as written after the old ones of the same second
    store.write(GraphBatch(interactions=[Interaction(user_id="u", item_id=i, timestamp=20) for i in ("b", "a")]))
    assert [x.item_id for x in store.history("u")] == ["a", "c", "b"]  # b unchanged, a moved to 20 (a new write)
    assert [x.item_id for x in store.interactions()] == ["b", "c", "a"]
    store.close()
    assert [x.item_id for x in SQLiteGraphStore(path).history("u")] == ["a", "c", "b"]


def test_v1_migration_is_one_transaction(tmp_path: Path) -> None:
    # The second ALTER TABLE fails (the column exists): the first is undone and the version stays 1.
    path = tmp_path / "v1.sqlite"
    _v1_database(path, extra=("ALTER TABLE facts ADD COLUMN provenance TEXT NOT NULL DEFAULT ''",))
    before = _facts_columns(path)
    with pytest.raises(StoreUnavailable, match="provenance"):
        SQLiteGraphStore(path).verify()
    assert _facts_columns(path) == before
    assert before[0] == 1 and "source" not in before[1]


def test_v1_database_without_its_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    _v1_database(path, skip="entity_df")
    before = _facts_columns(path)
    with pytest.raises(StoreUnavailable, match="lacks tables"):
        SQLiteGraphStore(path).verify()
    assert _facts_columns(path) == before  # not migrated


def test_filtered_store_reads_a_view(tmp_path: Path, tiny_kg: GraphBatch) -> None:
    """The unfiltered store reads the tables; a filtered one the TEMP view and degrees, named nowhere else."""
    path = tmp_path / "kg.sqlite"
    plain = SQLiteGraphStore(path)
    plain.write(tiny_kg)
    filtered = SQLiteGraphStore(path, fact_sources={"dataset", "llm"})
    assert filtered.kg_candidates({"m1": 1.0}, set(), 3) == plain.kg_candidates({"m1": 1.0}, set(), 3)
    assert "fact_sources=['dataset', 'llm']" in repr(filtered)
    with plain._db() as conn:
        temp = {r[0] for r in conn.execute("SELECT name FROM sqlite_temp_master WHERE type IN ('table', 'view')")}
    assert not temp & {"_vfacts", "_vdf", "_sources"}
    with filtered._db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM _vdf").fetchone()[0] == 8
    plain.close()
    filtered.close()


def _every_path(seed_weights, seed_links, target_links, targets, n_items, per_target, max_degree):
    """rank_paths by brute force: every path, sorted by the documented key, cut at per_target."""
    from knowrec.kg_store._common import DATASET_SOURCE, rarity

    out = {}
    for t in targets:
        paths = [
            (-seed_weights[s.seed] * rarity(n_items, s.degree), s.seed, s.entity, s.fact, x.fact, s, x)
            for s in seed_links
            for x in target_links
            if x.target == t and x.entity == s.entity and s.seed != t and 1 <= s.degree <= max_degree
        ]
        paths.sort(key=lambda p: p[:5])
        out[t] = [
            (p[1], p[2], p[3], p[4], -p[0], p[5].source != DATASET_SOURCE or p[6].source != DATASET_SOURCE)
            for p in paths[:per_target]
        ]
    return out


def test_rank_paths_keeps_exactly_the_heaviest_paths_of_every_target():
    """On random graphs with many ties the path ranking returns what ranking every path by the documented key would
    (it expands at most ``per_target`` paths per entity)."""
    import random

    from knowrec.kg_store._common import SeedLink, TargetLink, rank_paths

    rng = random.Random(0)
    for trial in range(300):
        items = [f"i{k}" for k in range(rng.randint(2, 9))]
        entities = [f"e{k}" for k in range(rng.randint(1, 8))]
        degree = {e: rng.randint(1, 6) for e in entities}
        seeds = rng.sample(items, rng.randint(1, len(items)))
        weights = {s: rng.choice([0.5, 1.0, 1.0, 2.0]) for s in seeds}
        seed_links = [
            SeedLink(s, e, "", f"F{s}{e}{k}", "r", rng.choice(["dataset", "llm"]), degree[e])
            for s in seeds
            for e in rng.sample(entities, rng.randint(0, len(entities)))
            for k in range(rng.randint(1, 2))
        ]
        targets = rng.sample(items, rng.randint(1, len(items)))
        target_links = [
            TargetLink(t, e, f"T{t}{e}{k}", "r", rng.choice(["dataset", "llm"]))
            for t in targets
            for e in rng.sample(entities, rng.randint(0, len(entities)))
            for k in range(rng.randint(1, 2))
        ]
        per_target, max_degree = rng.randint(1, 5), rng.randint(1, 6)
        got = rank_paths(
            weights, seed_links, target_links, targets, n_items=10, per_target=per_target, max_degree=max_degree
        )
        want = _every_path(weights, seed_links, target_links, targets, 10, per_target, max_degree)
        flat = {
            t: [(p.source_item, p.entity, p.source_fact, p.target_fact, p.weight, p.extracted) for p in ps]
            for t, ps in got.items()
        }
        assert flat == want, trial
