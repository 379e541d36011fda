"""Contract tests of :class:`knowrec.kg_store.base.GraphStore`, run against every backend.

Only the protocol is used here. A new backend adds a param to the ``backend`` fixture; params that need the disk or a
server are marked ``integration`` (``-m "not integration"`` runs the in-memory fake only).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from knowrec.errors import ConfigError, InvalidInput, StoreUnavailable
from knowrec.kg_store.base import GraphBatch, GraphStore, Retraction, WriteStats
from knowrec.types import Entity, Fact, Interaction, Item, KGPath, Provenance, fact_id

N_ITEMS = 6
LOG4 = math.log(1 + N_ITEMS / 2)  # an entity linked to 2 items
LOG3 = math.log(1 + N_ITEMS / 3)  # p:a1
LOG22 = math.log(1 + N_ITEMS / 5)  # genre:Comedy

BASE_STATS = {"items": 6, "entities": 8, "facts": 20, "users": 3, "interactions": 9}

NASTY_ID = "'); DROP TABLE items; --"
NASTY_ENTITY = "}) DETACH DELETE n //"
NASTY_TITLE = 'Amélie "quoted" it\'s — 東京 🎬'
NASTY_LABEL = 'Ünïcödé "label" \'; -- $x {y}'
NASTY_RELATION = "rel'\"`"
NASTY_USER = "u'); MATCH (n) DETACH DELETE n; --"


class Backend:
    """Opens stores of one kind on one storage (an in-memory graph, a SQLite file, the Neo4j test server), empty at
    first."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        # only SQLite asks for a temporary folder: the in-memory fake runs without the disk
        self._tmp_path: Path = request.getfixturevalue("tmp_path") if kind == "sqlite" else Path()
        self._opened: list[GraphStore] = []
        self._generation = 0
        self._uri = request.getfixturevalue("neo4j_server") if kind == "neo4j" else ""
        self._memory: GraphStore | None = None  # the first in-memory store of the current graph
        if kind not in ("memory", "sqlite", "neo4j"):
            raise AssertionError(kind)
        self.fresh()

    def fresh(self) -> None:
        """Start again on empty storage (stores opened before still point at the Neo4j server)."""
        if self.kind == "neo4j":
            from tests.servers_neo4j import wipe

            wipe(self._uri)  # a fresh graph; the store's constraints stay
        self._memory = None
        self._generation += 1

    def open(self, fact_sources: Collection[str] | None = None) -> GraphStore:
        """Another store on the current storage (for SQLite: another connection to the file)."""
        store: GraphStore
        if self.kind == "memory":
            from knowrec.testing import InMemoryGraphStore

            assert self._memory is None or isinstance(self._memory, InMemoryGraphStore)
            store = InMemoryGraphStore(fact_sources, same_graph_as=self._memory)
            self._memory = self._memory or store
        elif self.kind == "sqlite":
            from knowrec.kg_store.sqlite import SQLiteGraphStore

            store = SQLiteGraphStore(self._tmp_path / f"kg{self._generation}.sqlite", fact_sources=fact_sources)
        else:
            from knowrec.kg_store.neo4j import Neo4jGraphStore

            store = Neo4jGraphStore(self._uri, fact_sources=fact_sources)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("sqlite", marks=pytest.mark.integration),  # a file in tmp_path
        pytest.param("neo4j", marks=pytest.mark.integration),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = Backend(request.param, request)
    yield b
    b.close()


@pytest.fixture
def store(backend: Backend) -> GraphStore:
    return backend.open()


@pytest.fixture
def loaded(store: GraphStore, tiny_kg: GraphBatch) -> GraphStore:
    store.write(tiny_kg)
    return store


def _snapshot(store: GraphStore) -> tuple[object, ...]:
    ids = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]
    return (
        store.stats(),
        store.items(ids),
        {u: store.history(u) for u in ("u1", "u2", "u3", "u4")},
        store.facts(ids),
        store.popular(10),
        list(store.interactions()),
    )


# --- writing ----------------------------------------------------------------------------------------------------


def test_is_a_graph_store(store: GraphStore) -> None:
    assert isinstance(store, GraphStore)


def test_empty_store(store: GraphStore) -> None:
    assert store.stats() == {"items": 0, "entities": 0, "facts": 0, "users": 0, "interactions": 0}
    assert store.history("u1") == []
    assert store.popular(5) == []
    assert store.kg_candidates({"m1": 1.0}, set(), 5) == []
    assert list(store.iter_items()) == []
    assert list(store.iter_entities()) == []
    assert list(store.interactions()) == []


def test_write_counts_and_stats(store: GraphStore, tiny_kg: GraphBatch) -> None:
    assert store.write(tiny_kg) == WriteStats(items=6, facts=20, interactions=9)
    assert store.stats() == BASE_STATS


def test_write_is_idempotent(loaded: GraphStore, tiny_kg: GraphBatch) -> None:
    before = _snapshot(loaded)
    assert loaded.write(tiny_kg) == WriteStats(0, 0, 0)
    assert _snapshot(loaded) == before
    assert loaded.stats() == BASE_STATS


def test_write_counts_only_new_rows(loaded: GraphStore) -> None:
    batch = GraphBatch(
        items=[Item(id="m1", title="Alpha"), Item(id="m7", title="Eta")],
        facts=[
            Fact(head="m1", relation="director", tail="p:d1"),
            Fact(head="m7", relation="director", tail="p:d1"),
            Fact(head="m7", relation="director", tail="p:d1"),  # duplicate in the batch
        ],
        interactions=[
            Interaction(user_id="u1", item_id="m1", rating=5.0, timestamp=100),
            Interaction(user_id="u4", item_id="m7"),
        ],
    )
    assert loaded.write(batch) == WriteStats(items=1, facts=1, interactions=1)
    assert loaded.stats() == {"items": 7, "entities": 8, "facts": 21, "users": 4, "interactions": 10}


def test_progress_reports_every_row(store: GraphStore, tiny_kg: GraphBatch) -> None:
    seen: dict[str, int] = {}

    def progress(stage: str, n: int) -> None:
        seen[stage] = seen.get(stage, 0) + n

    store.write(tiny_kg, progress)
    assert seen == {"items": 6, "facts": 20, "interactions": 9}


def test_upsert_updates_items_facts_and_interactions(loaded: GraphStore) -> None:
    batch = GraphBatch(
        items=[Item(id="m1", title="Alpha Prime", text="new text", attributes={"year": "2001"})],
        facts=[Fact(head="m1", relation="director", tail="p:d1", tail_label="Director One")],
        interactions=[Interaction(user_id="u1", item_id="m1", rating=1.5, timestamp=300)],
    )
    assert loaded.write(batch) == WriteStats(0, 0, 0)
    assert loaded.items(["m1"])["m1"] == Item(
        id="m1", title="Alpha Prime", text="new text", attributes={"year": "2001"}
    )
    fid = fact_id("m1", "director", "p:d1")
    got = loaded.get_facts([fid])[fid]
    assert (got.head_label, got.tail_label) == ("Alpha Prime", "Director One")
    assert loaded.history("u1", 1) == [Interaction(user_id="u1", item_id="m1", rating=1.5, timestamp=300)]
    assert loaded.stats() == BASE_STATS


def test_empty_label_never_replaces_a_label(loaded: GraphStore) -> None:
    loaded.write(GraphBatch(facts=[Fact(head="m2", relation="director", tail="p:d1")]))
    fid = fact_id("m1", "director", "p:d1")
    assert loaded.get_facts([fid])[fid].tail_label == "Dir One"
    path = loaded.paths(["m1"], "m2", n=1)[0]
    assert (path.entity, path.entity_label) == ("p:d1", "Dir One")


def test_interaction_to_unknown_item_rolls_back(loaded: GraphStore) -> None:
    before = _snapshot(loaded)
    batch = GraphBatch(
        items=[Item(id="m8", title="Theta")],
        facts=[Fact(head="m8", relation="genre", tail="genre:Horror", tail_label="Horror")],
        interactions=[
            Interaction(user_id="u4", item_id="m8"),
            Interaction(user_id="u4", item_id="no-such-item"),
        ],
    )
    with pytest.raises(InvalidInput, match="no-such-item"):
        loaded.write(batch)
    assert _snapshot(loaded) == before
    assert loaded.has_items(["m8"]) == set()


def test_interaction_to_item_of_same_batch_is_fine(store: GraphStore) -> None:
    batch = GraphBatch(items=[Item(id="x", title="X")], interactions=[Interaction(user_id="u", item_id="x")])
    assert store.write(batch) == WriteStats(items=1, interactions=1)


@pytest.mark.parametrize("fail_at", ["items", "facts", "interactions"])
def test_progress_error_rolls_back(loaded: GraphStore, fail_at: str) -> None:
    before = _snapshot(loaded)
    batch = GraphBatch(
        items=[Item(id="m7", title="Eta"), Item(id="m1", title="Changed")],
        facts=[Fact(head="m7", relation="genre", tail="genre:Horror", tail_label="Horror")],
        interactions=[Interaction(user_id="u4", item_id="m7", timestamp=5)],
        retract=[Retraction(fact_id("m1", "director", "p:d1"), "dataset")],
    )

    class Boom(RuntimeError):
        pass

    def progress(stage: str, n: int) -> None:
        if stage == fail_at:
            raise Boom(stage)

    with pytest.raises(Boom):
        loaded.write(batch, progress)
    assert _snapshot(loaded) == before
    # The store still works and the same batch can be written afterwards.
    assert loaded.write(batch) == WriteStats(items=1, facts=1, interactions=1, retracted=1)


# --- items and interactions -------------------------------------------------------------------------------------


def test_items_and_has_items(loaded: GraphStore) -> None:
    assert loaded.has_items(["m1", "zzz", "m6", "p:d1"]) == {"m1", "m6"}
    got = loaded.items(["m2", "missing", "m1"])
    assert set(got) == {"m1", "m2"}
    assert got["m2"] == Item(id="m2", title="Beta", text="Beta is a film.", attributes={"year": "1992"})


def test_iter_items_in_id_order(loaded: GraphStore) -> None:
    pages = list(loaded.iter_items(batch_size=4))
    assert [[i.id for i in page] for page in pages] == [["m1", "m2", "m3", "m4"], ["m5", "m6"]]


def test_search_items(loaded: GraphStore) -> None:
    found = loaded.search_items("A", n=10)
    assert [i.id for i in found[:2]] == ["m1", "m2"]  # most popular first
    assert {i.id for i in found} == {"m1", "m2", "m3", "m4", "m6"}
    assert [i.id for i in loaded.search_items("ZET")] == ["m6"]
    assert len(loaded.search_items("a", n=2)) == 2
    assert loaded.search_items("nothing like it") == []


def test_history_order(loaded: GraphStore) -> None:
    # ts 200 twice (m2 written before m4), then 100, then the one without a timestamp.
    assert [x.item_id for x in loaded.history("u1")] == ["m4", "m2", "m1", "m3"]
    assert [x.item_id for x in loaded.history("u1", n=2)] == ["m4", "m2"]
    assert loaded.history("u2")[0] == Interaction(user_id="u2", item_id="m5", rating=2.0, timestamp=60)
    assert loaded.history("u3")[-1] == Interaction(user_id="u3", item_id="m1", rating=None, timestamp=10)


def test_equal_timestamps_keep_the_order_they_were_written_in(loaded: GraphStore) -> None:
    """Ties of the same second go by write order, not by item id (a data file's order is the one a split keeps)."""

    def write(*rows: tuple[str, int | None, float | None]) -> None:
        loaded.write(
            GraphBatch(interactions=[Interaction(user_id="t", item_id=i, timestamp=ts, rating=r) for i, ts, r in rows])
        )

    def order() -> list[str]:
        newest_first = [x.item_id for x in loaded.history("t")]
        assert [x.item_id for x in loaded.interactions() if x.user_id == "t"] == newest_first[::-1]
        return newest_first

    # neither id order (m1 < m3 < m5) nor its reverse: within a batch and across batches
    write(("m5", 500, None), ("m1", 500, None), ("m3", 500, None))
    assert order() == ["m3", "m1", "m5"]
    write(("m2", 500, None))
    write(("m6", 400, None), ("m4", None, None))
    assert order() == ["m2", "m3", "m1", "m5", "m6", "m4"]
    # a new rating alone keeps the place; writing the same row again too (a second ingest changes nothing)
    write(("m1", 500, 4.0), ("m5", 500, None))
    assert order() == ["m2", "m3", "m1", "m5", "m6", "m4"]
    assert loaded.history("t")[2].rating == 4.0
    # a new timestamp is a new write: m6 moved to 500 now counts as the most recent of that second
    write(("m6", 500, None))
    assert order() == ["m6", "m2", "m3", "m1", "m5", "m4"]
    # the same pair twice in one batch: the later row wins, and its timestamp decides its place
    write(("m4", 500, None), ("m5", 600, 1.0), ("m4", 300, 2.0))
    assert order() == ["m5", "m6", "m2", "m3", "m1", "m4"]
    assert loaded.history("t")[-1] == Interaction(user_id="t", item_id="m4", timestamp=300, rating=2.0)


def test_unknown_user_has_no_history(loaded: GraphStore) -> None:
    assert loaded.history("nobody") == []


def test_interactions_order(loaded: GraphStore) -> None:
    got = [(x.user_id, x.item_id) for x in loaded.interactions()]
    # Missing timestamp counts as oldest (as in history).
    assert got == [
        ("u1", "m3"),
        ("u1", "m1"),
        ("u1", "m2"),
        ("u1", "m4"),
        ("u2", "m1"),
        ("u2", "m5"),
        ("u3", "m1"),
        ("u3", "m2"),
        ("u3", "m6"),
    ]


def test_popular(loaded: GraphStore) -> None:
    assert loaded.popular(3) == [("m1", 3), ("m2", 2), ("m3", 1)]
    assert loaded.popular(3, exclude={"m1", "m3"}) == [("m2", 2), ("m4", 1), ("m5", 1)]
    assert loaded.popular(100) == [("m1", 3), ("m2", 2), ("m3", 1), ("m4", 1), ("m5", 1), ("m6", 1)]


def test_popular_sees_new_writes(loaded: GraphStore) -> None:
    assert loaded.popular(1) == [("m1", 3)]
    loaded.write(GraphBatch(interactions=[Interaction(user_id=f"v{i}", item_id="m6") for i in range(5)]))
    assert loaded.popular(1) == [("m6", 6)]


# --- facts ------------------------------------------------------------------------------------------------------


def test_facts_rarest_first(loaded: GraphStore) -> None:
    got = loaded.facts(["m4", "m6"])
    # m4: p:a3 (df 2, actor) and genre:Drama (df 2, genre), then p:a1 (df 3), then genre:Comedy (df 5).
    assert [f.tail for f in got["m4"]] == ["p:a3", "genre:Drama", "p:a1", "genre:Comedy"]
    # m6 is the tail of the writer's fact.
    assert [(f.head, f.tail) for f in got["m6"]] == [("p:w1", "m6"), ("m6", "genre:Comedy")]
    assert [f.tail for f in loaded.facts(["m4"], n=2)["m4"]] == ["p:a3", "genre:Drama"]


def test_facts_touch_their_item_and_have_stable_ids(loaded: GraphStore) -> None:
    ids = ["m1", "m2", "m3", "m4", "m5", "m6"]
    got = loaded.facts(ids)
    assert sum(len(v) for v in got.values()) == 20  # every fact touches exactly one item
    for item_id in ids:
        assert got[item_id]
        for f in got[item_id]:
            assert item_id in (f.head, f.tail)
            assert f.id == fact_id(f.head, f.relation, f.tail)
    first = got["m3"][0]
    assert first.head_label and first.tail_label


def test_get_facts_fills_labels(loaded: GraphStore) -> None:
    fid = fact_id("p:w1", "wrote", "m3")
    other = fact_id("m5", "actor", "p:a3")
    got = loaded.get_facts([fid, "Fnope", other])
    assert set(got) == {fid, other}
    assert got[fid] == Fact(id=fid, head="p:w1", relation="wrote", tail="m3", head_label="Writer W", tail_label="Gamma")
    assert got[other].text() == "Epsilon —actor→ Actor Three"


def test_item_entities(loaded: GraphStore) -> None:
    got = loaded.item_entities(["m6", "m2"])
    assert got["m6"] == {"p:w1", "genre:Comedy"}
    assert got["m2"] == {"p:d1", "p:a1", "genre:Comedy"}


def test_entity_degrees(loaded: GraphStore) -> None:
    assert loaded.entity_degrees(["genre:Comedy", "p:a1", "nope"]) == {"genre:Comedy": 5, "p:a1": 3, "nope": 0}
    assert loaded.entity_degrees([]) == {}


# --- knowledge-graph retrieval ----------------------------------------------------------------------------------


def test_kg_candidates_scores_by_hand(loaded: GraphStore) -> None:
    got = loaded.kg_candidates({"m1": 1.0}, exclude=set(), n=10, max_entity_items=4)
    assert [c.item_id for c in got] == ["m2", "m3", "m4"]
    assert [c.score for c in got] == pytest.approx([LOG4 + LOG3, LOG4, LOG3])
    for c in got:
        assert c.sources == {"kg": pytest.approx(c.score)}
        assert sum(p.weight for p in c.paths) == pytest.approx(c.score)


def test_kg_candidates_common_entity_when_allowed(loaded: GraphStore) -> None:
    got = loaded.kg_candidates({"m1": 1.0}, exclude=set(), n=10, max_entity_items=5)
    assert [c.item_id for c in got] == ["m2", "m4", "m3", "m5", "m6"]
    assert [c.score for c in got] == pytest.approx([LOG4 + LOG3 + LOG22, LOG3 + LOG22, LOG4, LOG22, LOG22])


def test_kg_candidates_weighted_seeds(loaded: GraphStore) -> None:
    got = loaded.kg_candidates({"m1": 1.0, "m3": 0.5}, exclude=set(), n=10, max_entity_items=4)
    # Seeds never come back; m5 and m6 tie and are ordered by id.
    assert [c.item_id for c in got] == ["m2", "m4", "m5", "m6"]
    assert [c.score for c in got] == pytest.approx([LOG4 + LOG3, LOG3 + 0.5 * LOG4, 0.5 * LOG4, 0.5 * LOG4])
    (path,) = got[3].paths
    assert path == KGPath(
        source_item="m3",
        entity="p:w1",
        entity_label="Writer W",
        source_fact=fact_id("p:w1", "wrote", "m3"),
        target_fact=fact_id("p:w1", "wrote", "m6"),
        source_relation="wrote",
        target_relation="wrote",
        weight=path.weight,
    )
    assert path.weight == pytest.approx(0.5 * LOG4)


def test_reads_see_the_next_write(loaded: GraphStore) -> None:
    """Counts and KG scores may be cached by a backend; a write (new item, new facts) must show in the next read."""
    before = loaded.kg_candidates({"m1": 1.0}, exclude=set(), n=10, max_entity_items=4)
    assert "m9" not in [c.item_id for c in before] and loaded.stats() == BASE_STATS
    loaded.write(
        GraphBatch(
            items=[Item(id="m9", title="Nine", text="Nine is a film.")],
            facts=[Fact(head="m9", relation="director", tail="p:d2", tail_label="Director Two")],
        )
    )
    assert loaded.stats()["items"] == BASE_STATS["items"] + 1
    assert loaded.stats()["facts"] == BASE_STATS["facts"] + 1
    after = loaded.kg_candidates({"m1": 1.0}, exclude=set(), n=10, max_entity_items=4)
    assert [c.item_id for c in after] == [c.item_id for c in before]  # m1 does not reach p:d2
    seeded = loaded.kg_candidates({"m3": 1.0}, exclude=set(), n=10, max_entity_items=4)
    assert "m9" in [c.item_id for c in seeded]


def test_kg_candidates_paths_heaviest_first(loaded: GraphStore) -> None:
    m2 = loaded.kg_candidates({"m1": 1.0}, exclude=set(), n=1, max_entity_items=5)[0]
    assert m2.item_id == "m2"
    assert [(p.entity, p.source_relation, p.target_relation) for p in m2.paths] == [
        ("p:d1", "director", "director"),
        ("p:a1", "actor", "actor"),
        ("genre:Comedy", "genre", "genre"),
    ]
    assert [p.weight for p in m2.paths] == pytest.approx([LOG4, LOG3, LOG22])
    first = m2.paths[0]
    assert first.source_item == "m1"
    assert first.entity_label == "Dir One"
    assert first.source_fact == fact_id("m1", "director", "p:d1")
    assert first.target_fact == fact_id("m2", "director", "p:d1")


def test_kg_candidates_respects_exclude_and_n(loaded: GraphStore) -> None:
    got = loaded.kg_candidates({"m1": 1.0}, exclude={"m2"}, n=10, max_entity_items=4)
    assert [c.item_id for c in got] == ["m3", "m4"]
    got = loaded.kg_candidates({"m1": 1.0}, exclude=frozenset({"m2", "m3", "m4"}), n=10, max_entity_items=5)
    assert [c.item_id for c in got] == ["m5", "m6"]
    assert [c.item_id for c in loaded.kg_candidates({"m1": 1.0}, set(), n=2, max_entity_items=5)] == ["m2", "m4"]


def test_kg_candidates_respects_max_entity_items(loaded: GraphStore) -> None:
    assert loaded.kg_candidates({"m1": 1.0}, set(), n=10, max_entity_items=1) == []
    got = loaded.kg_candidates({"m1": 1.0}, set(), n=10, max_entity_items=2)
    assert [c.item_id for c in got] == ["m2", "m3"]  # p:a1 (3 items) is left out
    assert all(p.entity != "p:a1" for c in got for p in c.paths)


def test_kg_candidates_unknown_seed(loaded: GraphStore) -> None:
    assert loaded.kg_candidates({"nope": 1.0}, set(), n=5) == []


def test_paths(loaded: GraphStore) -> None:
    got = loaded.paths(["m1", "m3"], "m4", n=5)
    assert [(p.source_item, p.entity) for p in got] == [
        ("m3", "genre:Drama"),
        ("m1", "p:a1"),
        ("m1", "genre:Comedy"),
    ]
    assert [p.weight for p in got] == pytest.approx([LOG4, LOG3, LOG22])
    assert got[0].source_fact == fact_id("m3", "genre", "genre:Drama")
    assert got[0].target_fact == fact_id("m4", "genre", "genre:Drama")
    assert len(loaded.paths(["m1", "m3"], "m4", n=2)) == 2
    assert loaded.paths(["m4"], "m4") == []
    assert loaded.paths([], "m4") == []


def test_paths_many_is_paths_for_each(loaded: GraphStore) -> None:
    seeds = ["m1", "m3"]
    asked = ["m4", "m2", "m3", "m6", "nope"]  # m3 is itself a seed; "nope" is not stored
    got = loaded.paths_many(seeds, asked, n=2)
    assert list(got) == asked
    for item_id in asked:
        assert got[item_id] == loaded.paths(seeds, item_id, n=2), item_id
    assert got["m4"] and got["m3"]  # m3 reaches m1 through p:a2 and genre facts
    assert loaded.paths_many([], ["m4"]) == {"m4": []}
    assert loaded.paths_many(seeds, []) == {}


# --- awkward ids and labels -------------------------------------------------------------------------------------


def test_awkward_strings_round_trip(loaded: GraphStore) -> None:
    batch = GraphBatch(
        items=[
            Item(id=NASTY_ID, title=NASTY_TITLE, text='it\'s "text"\n; --', attributes={"k'ey": 'va"l'}),
            Item(id="m9", title="Nine"),
        ],
        facts=[
            Fact(head=NASTY_ID, relation=NASTY_RELATION, tail=NASTY_ENTITY, tail_label=NASTY_LABEL),
            Fact(head="m9", relation="rel", tail=NASTY_ENTITY),
        ],
        interactions=[Interaction(user_id=NASTY_USER, item_id=NASTY_ID, rating=4.5, timestamp=7)],
    )
    assert loaded.write(batch) == WriteStats(items=2, facts=2, interactions=1)
    assert loaded.stats() == {"items": 8, "entities": 9, "facts": 22, "users": 4, "interactions": 10}

    item = loaded.items([NASTY_ID])[NASTY_ID]
    assert item == batch.items[0]
    assert [i.id for i in loaded.search_items("AMÉLIE")] == [NASTY_ID]
    assert [i.id for i in loaded.search_items('"quoted" it\'s')] == [NASTY_ID]
    assert loaded.history(NASTY_USER) == batch.interactions
    fid = fact_id(NASTY_ID, NASTY_RELATION, NASTY_ENTITY)
    assert loaded.get_facts([fid])[fid] == Fact(
        head=NASTY_ID, relation=NASTY_RELATION, tail=NASTY_ENTITY, head_label=NASTY_TITLE, tail_label=NASTY_LABEL
    )
    assert [f.id for f in loaded.facts([NASTY_ID])[NASTY_ID]] == [fid]
    assert loaded.item_entities([NASTY_ID]) == {NASTY_ID: {NASTY_ENTITY}}
    (cand,) = loaded.kg_candidates({NASTY_ID: 1.0}, set(), n=5)
    assert cand.item_id == "m9"
    assert (cand.paths[0].entity, cand.paths[0].entity_label) == (NASTY_ENTITY, NASTY_LABEL)
    assert cand.paths[0].source_relation == NASTY_RELATION
    assert loaded.popular(1, exclude={"m1"}) == [("m2", 2)]
    assert NASTY_ID in {i.id for page in loaded.iter_items() for i in page}


# --- fact sources and provenance --------------------------------------------------------------------------------

PROV = Provenance(
    source="llm",
    model='smollm2 "q4"',
    adapter="lora-kg'1",
    prompt="kg_extract@1",
    confidence=0.73,
    evidence="directed by 東京 " + NASTY_LABEL + "\nnext line",
    field="text",
)
PROV2 = Provenance(model="other", prompt="kg_extract@2", confidence=0.25, evidence="something else", field="title")


def _llm(head: str, relation: str, tail: str, head_label: str = "", tail_label: str = "", **kw: Any) -> Fact:
    return Fact(
        head=head,
        relation=relation,
        tail=tail,
        head_label=head_label,
        tail_label=tail_label,
        source="llm",
        provenance=kw.pop("provenance", PROV.model_copy(update={"evidence": f"{head} {relation} {tail}"})),
        **kw,
    )


def test_provenance_round_trip(loaded: GraphStore) -> None:
    fact = Fact(
        head="m6",
        relation=NASTY_RELATION,
        tail="p:d9",
        head_label="Zeta",
        tail_label="Dir Nine",
        source="llm",
        provenance=PROV,
    )
    manual = Fact(head="m6", relation="tag", tail="tag:x", head_label="Zeta", tail_label="X", source="manual")
    assert loaded.write(GraphBatch(facts=[fact, manual])) == WriteStats(facts=2)
    got = loaded.get_facts([fact.id, manual.id])
    assert got == {fact.id: fact, manual.id: manual}
    assert got[fact.id].provenance is not None
    assert got[fact.id].provenance.model_dump() == {
        "source": "llm",
        "model": 'smollm2 "q4"',
        "adapter": "lora-kg'1",
        "prompt": "kg_extract@1",
        "confidence": 0.73,
        "evidence": "directed by 東京 " + NASTY_LABEL + "\nnext line",
        "field": "text",
    }
    assert (got[manual.id].source, got[manual.id].provenance) == ("manual", None)
    listed = {f.id: f for f in loaded.facts(["m6"])["m6"]}
    assert listed[fact.id] == fact and listed[manual.id] == manual
    # Facts of the data say so and have no provenance.
    fid = fact_id("m1", "director", "p:d1")
    dataset = loaded.get_facts([fid])[fid]
    assert (dataset.source, dataset.provenance) == ("dataset", None)
    assert {(f.source, f.provenance) for f in loaded.facts(["m1"])["m1"]} == {("dataset", None)}


def test_first_stored_source_and_provenance_win(loaded: GraphStore) -> None:
    fid = fact_id("m1", "director", "p:d1")
    again = _llm("m1", "director", "p:d1", tail_label="Director One", provenance=PROV)
    assert loaded.write(GraphBatch(facts=[again])) == WriteStats()
    got = loaded.get_facts([fid])[fid]
    assert (got.source, got.provenance) == ("dataset", None)
    assert got.tail_label == "Director One"  # labels keep their own rule: a non-empty one replaces
    # A new triple: the first of two in one batch wins, and a later write (even from the data) changes nothing.
    first = _llm("m6", "director", "p:d1", provenance=PROV)
    second = _llm("m6", "director", "p:d1", provenance=PROV2)
    assert loaded.write(GraphBatch(facts=[first, second])) == WriteStats(facts=1)
    assert loaded.write(GraphBatch(facts=[Fact(head="m6", relation="director", tail="p:d1")])) == WriteStats()
    assert loaded.write(GraphBatch(facts=[second])) == WriteStats()
    got = loaded.get_facts([first.id])[first.id]
    assert (got.source, got.provenance) == ("llm", PROV)
    (listed,) = [f for f in loaded.facts(["m6"])["m6"] if f.id == first.id]
    assert (listed.source, listed.provenance) == ("llm", PROV)


# Facts an LLM read from the texts of tiny_kg's items: one the data also states (m1 —director→ p:d1), some that link
# items to entities of the data (changing their degrees: p:a1 3 -> 4, p:d1 2 -> 3, genre:Comedy 5 -> 6, p:w1 2 -> 3),
# entities only they name, and an item-to-item fact. Labels are those of the data.
def _llm_facts() -> list[Fact]:
    return [
        _llm("m1", "director", "p:d1", "Alpha", "Dir One"),
        _llm("m3", "actor", "p:a1", "Gamma", "Actor One"),
        _llm("m6", "director", "p:d1", "Zeta", "Dir One"),
        _llm("m3", "genre", "genre:Comedy", "Gamma", "Comedy"),
        _llm("m1", "theme", "theme:heist", "Alpha", "Heist"),
        _llm("m3", "theme", "theme:heist", "Gamma", "Heist"),
        _llm("m5", "theme", "theme:heist", "Epsilon", "Heist"),
        _llm("p:w1", "wrote", "m1", "Writer W", "Alpha"),
        _llm("m2", "sequel_of", "m1", "Beta", "Alpha"),
        _llm("m6", "mood", "mood:dark", "Zeta", "Dark"),
    ]


ASKED_ITEMS = ["m1", "m2", "m3", "m4", "m5", "m6", "nope"]
ASKED_ENTITIES = [
    *("p:d1", "p:d2", "p:a1", "p:a2", "p:a3", "p:w1", "genre:Comedy", "genre:Drama"),
    *("theme:heist", "mood:dark", "nope"),
]


def _rounded(value: Any) -> Any:
    """Models as plain data with floats rounded (sums may be added up in another order)."""
    if isinstance(value, BaseModel):
        return _rounded(value.model_dump())
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    if isinstance(value, float):
        return round(value, 9)
    return value


def _fact_reads(store: GraphStore) -> dict[str, Any]:
    """Every read that uses facts, asked several ways."""
    return {
        "facts": store.facts(ASKED_ITEMS),
        "facts_n2": store.facts(ASKED_ITEMS, n=2),
        "item_entities": store.item_entities(ASKED_ITEMS),
        "entity_degrees": store.entity_degrees(ASKED_ENTITIES),
        "kg_candidates": _rounded(
            [
                store.kg_candidates(seeds, exclude=set(), n=10, max_entity_items=cut)
                for seeds in ({"m1": 1.0}, {"m3": 1.0, "m6": 0.5}, {"m2": 1.0, "m5": 0.25})
                for cut in (1, 2, 3, 4, 200)
            ]
        ),
        "paths_many": _rounded(store.paths_many(["m1", "m3"], ASKED_ITEMS, n=10)),
        "paths": _rounded([store.paths(["m2", "m6"], item, n=3) for item in ASKED_ITEMS]),
    }


def test_fact_sources_filter(backend: Backend, tiny_kg: GraphBatch) -> None:
    llm = _llm_facts()
    store = backend.open()
    store.write(tiny_kg)
    dataset_only = _fact_reads(store)
    store.write(GraphBatch(facts=llm))
    both = _fact_reads(store)
    for read, answer in both.items():  # the LLM's facts change every answer, so the filter has work to do
        assert answer != dataset_only[read], read

    filtered = backend.open(fact_sources={"dataset"})
    assert _fact_reads(filtered) == dataset_only
    # Every source named is every fact (counted on the fly, where the backend keeps degrees of all facts).
    assert _fact_reads(backend.open(fact_sources=["llm", "dataset", "llm"])) == both
    # Facts by id, entities and counts are not filtered.
    assert filtered.get_facts([f.id for f in llm]) == store.get_facts([f.id for f in llm])
    assert filtered.get_facts([llm[1].id])[llm[1].id].source == "llm"
    assert filtered.stats() == store.stats() == {**BASE_STATS, "entities": 10, "facts": 29}
    assert list(filtered.iter_entities()) == list(store.iter_entities())
    # Naming no source sees no fact.
    nothing = backend.open(fact_sources=())
    assert nothing.facts(["m1"]) == {"m1": []}
    assert nothing.kg_candidates({"m1": 1.0}, set(), 10) == []
    assert nothing.entity_degrees(["genre:Comedy"]) == {"genre:Comedy": 0}

    # The other way round: a store holding only the LLM's facts, then the data's too.
    backend.fresh()
    store = backend.open()
    store.write(GraphBatch(items=tiny_kg.items, facts=llm))
    llm_only = _fact_reads(store)
    store.write(tiny_kg)
    assert _fact_reads(store) != llm_only
    assert _fact_reads(backend.open(fact_sources={"llm"})) == llm_only


def test_retract_removes_facts_of_the_source_named(backend: Backend, tiny_kg: GraphBatch) -> None:
    llm = _llm_facts()
    store = backend.open()
    store.write(tiny_kg)
    dataset_only = (_fact_reads(store), store.stats(), list(store.iter_entities()))
    store.write(GraphBatch(facts=llm))
    assert _fact_reads(store) != dataset_only[0]  # read once: whatever a backend caches is filled
    other = backend.open()  # another store on the same storage
    assert _fact_reads(other) == _fact_reads(store)

    retract = [Retraction(f.id, "llm") for f in llm] + [Retraction("Fnot-stored", "llm")]
    # m1 -director-> p:d1 is the data's too; stored first from the data, it is no `llm` fact and stays
    assert store.write(GraphBatch(retract=retract)) == WriteStats(retracted=len(llm) - 1)
    after = (_fact_reads(store), store.stats(), list(store.iter_entities()))
    assert after == dataset_only  # degrees recomputed, entities only the LLM named (theme:heist, mood:dark) gone
    assert (_fact_reads(other), other.stats()) == dataset_only[:2]
    assert store.write(GraphBatch(retract=retract)) == WriteStats()  # nothing left to retract

    # Retraction goes first: a fact retracted and written in one batch is stored, with the new row's source.
    fid = fact_id("m1", "director", "p:d1")
    data = store.get_facts([fid])[fid]
    assert data.source == "dataset"
    again = _llm("m1", "director", "p:d1", "Alpha", "Dir One", provenance=PROV)
    assert store.write(GraphBatch(facts=[again], retract=[Retraction(fid, "dataset")])) == WriteStats(
        facts=1, retracted=1
    )
    assert store.get_facts([fid])[fid] == again
    assert again in store.facts(["m1"])["m1"]
    assert store.entity_degrees(ASKED_ENTITIES) == dataset_only[0]["entity_degrees"]


def test_filtered_reads_see_the_next_write(backend: Backend, loaded: GraphStore) -> None:
    filtered = backend.open(fact_sources={"dataset"})
    assert filtered.entity_degrees(["p:a3"]) == {"p:a3": 2}
    got = filtered.kg_candidates({"m5": 1.0}, set(), n=10, max_entity_items=4)
    assert {c.item_id: c.score for c in got} == pytest.approx({"m3": LOG4, "m4": LOG4})
    filtered.write(GraphBatch(facts=[Fact(head="m6", relation="actor", tail="p:a3")]))  # its own write
    assert filtered.entity_degrees(["p:a3"]) == {"p:a3": 3}
    loaded.write(GraphBatch(facts=[Fact(head="m2", relation="actor", tail="p:a3")]))  # another store's
    loaded.write(GraphBatch(facts=[_llm("m1", "actor", "p:a3")]))  # not seen
    assert filtered.entity_degrees(["p:a3"]) == {"p:a3": 4}
    assert loaded.entity_degrees(["p:a3"]) == {"p:a3": 5}
    got = filtered.kg_candidates({"m5": 1.0}, set(), n=10, max_entity_items=4)
    rarity = math.log(1 + N_ITEMS / 4)
    assert {c.item_id: c.score for c in got} == pytest.approx({"m3": LOG4, "m2": rarity, "m4": rarity, "m6": rarity})
    assert [f.tail for f in filtered.facts(["m1"])["m1"]] == ["p:a2", "p:d1", "p:a1", "genre:Comedy"]


def test_fact_sources_is_not_a_string(backend: Backend) -> None:
    with pytest.raises(ConfigError, match="fact_sources"):
        backend.open(fact_sources="dataset")


def test_iter_entities(backend: Backend, loaded: GraphStore) -> None:
    loaded.write(
        GraphBatch(
            facts=[
                _llm("m3", "starring", "p:a1"),  # every source counts, for the relations and the degree
                _llm("m3", "actor", "p:a1"),
                Fact(head="p:d1", relation="born_in", tail="place:x", tail_label="Place X"),  # not an item's
            ]
        )
    )
    expected = [
        Entity(id="genre:Comedy", label="Comedy", relations=("genre",), degree=5),
        Entity(id="genre:Drama", label="Drama", relations=("genre",), degree=2),
        Entity(id="p:a1", label="Actor One", relations=("actor", "starring"), degree=4),
        Entity(id="p:a2", label="Actor Two", relations=("actor",), degree=2),
        Entity(id="p:a3", label="Actor Three", relations=("actor",), degree=2),
        Entity(id="p:d1", label="Dir One", relations=("director",), degree=2),
        Entity(id="p:d2", label="Dir Two", relations=("director",), degree=2),
        Entity(id="p:w1", label="Writer W", relations=("wrote",), degree=2),
        Entity(id="place:x", label="Place X", relations=(), degree=0),
    ]
    pages = list(loaded.iter_entities(batch_size=4))
    assert pages == [expected[:4], expected[4:8], expected[8:]]
    assert list(loaded.iter_entities()) == [expected]
    assert list(loaded.iter_entities(batch_size=9)) == [expected]
    assert list(backend.open(fact_sources={"dataset"}).iter_entities(batch_size=5)) == [expected[:5], expected[5:]]
    with pytest.raises(InvalidInput, match="batch_size"):
        list(loaded.iter_entities(batch_size=0))


def test_paths_say_whether_a_fact_was_extracted(loaded: GraphStore) -> None:
    assert not any(p.extracted for c in loaded.kg_candidates({"m1": 1.0}, set(), 10) for p in c.paths)
    assert not any(p.extracted for ps in loaded.paths_many(["m1"], ["m2", "m3", "m4"]).values() for p in ps)
    loaded.write(
        GraphBatch(
            facts=[
                _llm("m3", "actor", "p:a1"),
                Fact(head="m6", relation="actor", tail="p:a2", source="manual"),  # any source but the data's
            ]
        )
    )
    # The candidate's fact is extracted (m1 -> m3), or the seed's (m3 -> m1).
    assert {p.entity: p.extracted for p in loaded.paths(["m1"], "m3", n=10)} == {"p:a1": True, "p:a2": False}
    assert {p.entity: p.extracted for p in loaded.paths(["m3"], "m1", n=10)} == {"p:a1": True, "p:a2": False}
    assert {p.entity: p.extracted for p in loaded.paths(["m1"], "m6", n=10)} == {"genre:Comedy": False, "p:a2": True}
    m3 = next(c for c in loaded.kg_candidates({"m1": 1.0}, set(), 10) if c.item_id == "m3")
    assert {p.entity: p.extracted for p in m3.paths} == {"p:a1": True, "p:a2": False}
    (from_m3,) = loaded.kg_candidates({"m3": 1.0}, set(), 1, max_entity_items=4)
    assert any(p.extracted for p in from_m3.paths) and not all(p.extracted for p in from_m3.paths)
    many = loaded.paths_many(["m1"], ["m3", "m6"], n=10)
    assert {p.entity: p.extracted for p in many["m6"]} == {"genre:Comedy": False, "p:a2": True}


def test_close_twice(store: GraphStore, tiny_kg: GraphBatch) -> None:
    """After ``close`` the store refuses work with a clear error (so ``close`` really released it), and a second
    ``close`` is harmless."""
    store.write(tiny_kg)
    assert store.stats()["items"] == 6
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.stats()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.items(["m1"])
    store.close()
