"""Neo4jGraphStore against a real Neo4j 5.26: outages, atomicity, Cypher-looking data, and the whole pipeline."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knowrec import Recommender, Settings
from knowrec.errors import StoreUnavailable
from knowrec.kg_store.base import GraphBatch, WriteStats
from knowrec.kg_store.neo4j import Neo4jGraphStore
from knowrec.types import Fact, Interaction, Item, fact_id
from tests.fakes import HashEmbedder
from tests.servers_neo4j import Neo4jProcess, free_port, start_neo4j, wipe
from tests.unit.test_graph_contract import (
    NASTY_ENTITY,
    NASTY_ID,
    NASTY_LABEL,
    NASTY_RELATION,
    NASTY_TITLE,
    NASTY_USER,
)
from tests.unit.test_ingest_pipeline import dataset

pytestmark = pytest.mark.integration

TINY_STATS = {"items": 6, "entities": 8, "facts": 20, "users": 3, "interactions": 9}
EMPTY_STATS = {"items": 0, "entities": 0, "facts": 0, "users": 0, "interactions": 0}


@pytest.fixture
def store(neo4j_server: str) -> Iterator[Neo4jGraphStore]:
    wipe(neo4j_server)
    s = Neo4jGraphStore(neo4j_server)
    yield s
    s.close()


def _big_batch(n: int = 6_000) -> GraphBatch:
    """More rows than one UNWIND statement takes (5,000), so a write runs several statements."""
    items = [Item(id=f"b{i:05d}", title=f"Bulk {i}") for i in range(n)]
    facts = [Fact(head=f"b{i:05d}", relation="genre", tail=f"g:{i % 7}") for i in range(n)]
    interactions = [Interaction(user_id=f"u{i % 50}", item_id=f"b{i:05d}", timestamp=i) for i in range(n)]
    return GraphBatch(items=items, facts=facts, interactions=interactions)


def _everything(store: Neo4jGraphStore) -> tuple[object, ...]:
    return (
        store.stats(),
        [i for page in store.iter_items() for i in page],
        list(store.interactions()),
        store.facts([f"m{i}" for i in range(1, 7)]),
    )


# --- unreachable server -----------------------------------------------------------------------------------------


def test_unreachable_uri_raises_one_clear_error_quickly() -> None:
    uri = f"bolt://127.0.0.1:{free_port()}"  # nothing listens there
    store = Neo4jGraphStore(uri, connection_timeout=2.0, retry_time=1.0)  # no I/O yet
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        store.verify()
    assert time.monotonic() - started < 15
    message = str(info.value)
    assert message.startswith(f"cannot reach Neo4j at {uri}: ")
    assert "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one message, no chained traceback
    # Every operation says the same; so does a write.
    with pytest.raises(StoreUnavailable, match=re.escape(f"cannot reach Neo4j at {uri}")):
        store.stats()
    with pytest.raises(StoreUnavailable, match=re.escape(f"cannot reach Neo4j at {uri}")):
        store.write(GraphBatch(items=[Item(id="x", title="X")]))
    store.close()
    store.close()


def test_bad_scheme_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match=re.escape("cannot reach Neo4j at http://127.0.0.1:1: not a Bolt URI")):
        Neo4jGraphStore("http://127.0.0.1:1").verify()


def test_closed_store_is_unavailable(store: Neo4jGraphStore) -> None:
    store.verify()
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.stats()


def test_recommender_verify_reports_the_uri(tmp_path: Path) -> None:
    uri = f"bolt://127.0.0.1:{free_port()}"
    settings = Settings(data_dir=tmp_path, graph_uri=uri, llm={"backend": "none"}, ranker={"mode": "none"})
    rec = Recommender(settings, embedder=HashEmbedder())
    try:
        with pytest.raises(StoreUnavailable, match=re.escape(f"cannot reach Neo4j at {uri}")):
            rec.store.stats()
    finally:
        rec.close()


# --- atomicity --------------------------------------------------------------------------------------------------


class _FailingStore(Neo4jGraphStore):
    """Fails like a dropped connection after ``after`` write statements of a transaction."""

    def __init__(self, uri: str, after: int, action: Any = None) -> None:
        super().__init__(uri)
        self.after = after
        self.action = action
        self.statements = 0

    def _run(self, tx: Any, query: str, **params: Any) -> None:
        if self.statements == self.after:
            if self.action is not None:
                self.action()
            else:
                from neo4j.exceptions import ServiceUnavailable

                raise ServiceUnavailable("connection lost (simulated)")
        self.statements += 1
        super()._run(tx, query, **params)


@pytest.mark.parametrize("after", [1, 7])
def test_connection_lost_mid_write_leaves_nothing(store: Neo4jGraphStore, neo4j_server: str, tiny_kg, after) -> None:
    store.write(tiny_kg)
    before = _everything(store)
    failing = _FailingStore(neo4j_server, after=after)
    with pytest.raises(
        StoreUnavailable, match=re.escape(f"cannot reach Neo4j at {neo4j_server}: ") + ".*connection lost"
    ):
        failing.write(_big_batch())
    failing.close()
    assert failing.statements == after
    assert _everything(store) == before
    assert store.has_items(["b00000", "b05999"]) == set()
    # A re-run writes everything.
    assert store.write(_big_batch()) == WriteStats(items=6_000, facts=6_000, interactions=6_000)
    assert store.stats() == {"items": 6_006, "entities": 15, "facts": 6_020, "users": 50, "interactions": 6_009}
    (cand,) = store.kg_candidates({"b00000": 1.0}, set(), n=1, max_entity_items=5000)
    assert cand.item_id == "b00007" and cand.paths[0].entity == "g:0"


def test_server_killed_mid_ingest_then_restarted(tmp_path: Path, tiny_kg: GraphBatch) -> None:
    """A real crash (SIGKILL) during a write: after a restart on the same data the store is as before, and the same
    store object completes the re-run."""
    server = start_neo4j(tmp_path)
    store = _FailingStore(server.uri, after=-1, action=server.kill)
    try:
        store.write(tiny_kg)
        store.verify()
        store.statements, store.after = 0, 4
        with pytest.raises(StoreUnavailable, match=re.escape(f"cannot reach Neo4j at {server.uri}")):
            store.write(_big_batch())
        assert server.proc.poll() is not None
        with pytest.raises(StoreUnavailable, match=re.escape(server.uri)):  # checked again once connected
            store.verify()
        server = Neo4jProcess(server.port, server.data_dir, server.log_path)
        server.wait_ready()
        store.after = -1  # never fail again
        assert store.stats() == TINY_STATS
        assert store.has_items(["b00000"]) == set()
        assert store.write(_big_batch()) == WriteStats(items=6_000, facts=6_000, interactions=6_000)
        assert store.stats()["items"] == 6_006
    finally:
        store.close()
        server.stop()


# --- Cypher-looking data ----------------------------------------------------------------------------------------


NASTY_MORE = ["$param", "`n`", "'}) MATCH (m) DETACH DELETE m RETURN 1 //", "{x: 1}", "\\u0027", "a\nb"]


def test_cypher_syntax_in_data_is_stored_verbatim(store: Neo4jGraphStore, neo4j_server: str, tiny_kg) -> None:
    store.write(tiny_kg)
    items = [Item(id=NASTY_ID, title=NASTY_TITLE, text="}) DETACH DELETE n //", attributes={"`k`": "$v"})]
    items += [Item(id=s, title=s, text=s, attributes={s: s}) for s in NASTY_MORE]
    facts = [Fact(head=NASTY_ID, relation=NASTY_RELATION, tail=NASTY_ENTITY, head_label="x", tail_label=NASTY_LABEL)]
    facts += [Fact(head=s, relation=s, tail=f"e:{s}", tail_label=s) for s in NASTY_MORE]
    facts += [Fact(head=s, relation="`]->(x) DELETE x //", tail=NASTY_ENTITY) for s in NASTY_MORE[:2]]
    inter = [Interaction(user_id=NASTY_USER, item_id=s, timestamp=i) for i, s in enumerate([NASTY_ID, *NASTY_MORE])]
    batch = GraphBatch(items=items, facts=facts, interactions=inter)
    assert store.write(batch) == WriteStats(items=7, facts=9, interactions=7)
    assert store.write(batch) == WriteStats(0, 0, 0)

    stats = store.stats()
    assert stats == {"items": 13, "entities": 8 + 1 + 6, "facts": 29, "users": 4, "interactions": 16}
    assert store.items([it.id for it in items]) == {it.id: it for it in items}
    for s in NASTY_MORE:
        assert store.search_items(s)[0].id == s
        (f,) = [f for f in store.facts([s])[s] if f.relation == s]
        assert (f.head, f.tail, f.tail_label) == (s, f"e:{s}", s)
    fid = fact_id(NASTY_ID, NASTY_RELATION, NASTY_ENTITY)
    got = store.get_facts([fid])[fid]
    assert (got.relation, got.tail, got.head_label, got.tail_label) == (
        NASTY_RELATION,
        NASTY_ENTITY,
        NASTY_TITLE,
        NASTY_LABEL,
    )
    assert [x.item_id for x in store.history(NASTY_USER)] == list(reversed([NASTY_ID, *NASTY_MORE]))
    cands = store.kg_candidates({NASTY_ID: 1.0}, set(), n=5)
    assert {c.item_id for c in cands} == set(NASTY_MORE[:2])
    assert {p.target_relation for c in cands for p in c.paths} == {"`]->(x) DELETE x //"}
    # Nothing else was harmed, and relation names never became relationship types or labels.
    assert store.items(["m1"])["m1"] == tiny_kg.items[0]
    assert len(store.history("u1")) == 4
    import neo4j

    with neo4j.GraphDatabase.driver(neo4j_server, auth=None) as driver:
        types = {r[0] for r in driver.execute_query("MATCH ()-[r]->() RETURN DISTINCT type(r)").records}
        labels = {r[0] for r in driver.execute_query("MATCH (n) UNWIND labels(n) AS l RETURN DISTINCT l").records}
    assert types == {"FACT", "INTERACTED"}
    assert labels == {"KGNode", "Item", "Entity", "User"}


# --- the whole pipeline -----------------------------------------------------------------------------------------


def test_recommender_end_to_end_on_neo4j(neo4j_server: str, tmp_path: Path) -> None:
    wipe(neo4j_server)
    settings = Settings(
        data_dir=tmp_path,
        graph_uri=neo4j_server,
        progress=False,
        llm={"backend": "none"},
        ranker={"mode": "none"},
        retrieval={"ease_min_count": 1, "n_candidates": 6},
    )
    rec = Recommender(settings, embedder=HashEmbedder())
    try:
        assert rec.verify()["graph"] == f"neo4j {neo4j_server}"
        rec.ingest_dataset(dataset())
        assert rec.store.stats() == {"items": 7, "entities": 6, "facts": 14, "users": 4, "interactions": 10}
        rec.ingest_dataset(dataset())  # idempotent
        assert rec.store.stats()["facts"] == 14
        result = rec.recommend("u1", k=3)
        ids = [it.item_id for it in result.items]
        assert len(ids) == 3 == len(set(ids))
        assert not {"1", "3"} & set(ids)
        mann = [it for it in result.items if it.item_id in {"4", "7"}]
        assert mann and any("Michael Mann" in r.text for it in mann for r in it.reasons)
        for it in result.items:
            # every item has a reason; every reason cites at least one fact; every cited fact is stored in Neo4j and
            # is about this item; the facts of the reasons' context (the liked film's side) are stored too
            assert it.reasons, f"{it.item_id} has no reason"
            assert all(r.fact_ids for r in it.reasons), f"{it.item_id}: a reason cites no fact"
            cited = [f for r in it.reasons for f in r.fact_ids]
            stored = rec.store.get_facts(cited)
            assert set(cited) == set(stored), f"{it.item_id}: cites facts that are not stored"
            assert all(it.item_id in (f.head, f.tail) for f in stored.values())
            context = [f for r in it.reasons for f in r.context_fact_ids]
            assert set(rec.store.get_facts(context)) == set(context)
    finally:
        rec.close()


def test_interactions_stored_before_the_write_order_tie_by_item_id(store: Neo4jGraphStore, neo4j_server: str) -> None:
    """A store written before ``seq`` existed: its interactions of one second tie by item id and count as written
    before any stored since (as SQLite's rows migrated from schema v2)."""
    import neo4j

    items = [Item(id=i, title=i.upper()) for i in ("a", "b", "c")]
    store.write(GraphBatch(items=items, interactions=[Interaction(user_id="u", item_id=i, timestamp=20) for i in "cb"]))
    assert [x.item_id for x in store.history("u")] == ["b", "c"]  # write order
    with neo4j.GraphDatabase.driver(neo4j_server, auth=None) as driver:
        driver.execute_query("MATCH ()-[r:INTERACTED]->() REMOVE r.seq")
    assert [x.item_id for x in store.history("u")] == ["c", "b"]  # no write order kept: id descending
    store.write(GraphBatch(interactions=[Interaction(user_id="u", item_id=i, timestamp=20) for i in ("b", "a")]))
    assert [x.item_id for x in store.history("u")] == ["a", "c", "b"]  # b unchanged, a new
    assert [x.item_id for x in store.interactions()] == ["b", "c", "a"]
