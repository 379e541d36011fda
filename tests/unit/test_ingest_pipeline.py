"""Ingest atomicity across graph + index, and the whole pipeline with fakes.

Every test runs on :mod:`knowrec.testing`'s in-memory graph store and item index (``memory``, a unit test) and again
on the embedded stores, a SQLite file and a Chroma folder (``disk``, marked ``integration``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knowrec import InvalidInput, Recommender, Settings
from knowrec.datasets import Dataset
from knowrec.kg_store.sqlite import SQLiteGraphStore
from knowrec.testing import InMemoryGraphStore, InMemoryItemIndex
from knowrec.types import Fact, Interaction, Item
from tests.fakes import FakeLLM, HashEmbedder

MOVIES = {
    "1": ("Jaws (1975)", "dbr:Spielberg", "Steven Spielberg", "Thriller"),
    "2": ("E.T. (1982)", "dbr:Spielberg", "Steven Spielberg", "Sci-Fi"),
    "3": ("Heat (1995)", "dbr:Mann", "Michael Mann", "Crime"),
    "4": ("Collateral (2004)", "dbr:Mann", "Michael Mann", "Crime"),
    "5": ("Alien (1979)", "dbr:Scott", "Ridley Scott", "Sci-Fi"),
    "6": ("Blade Runner (1982)", "dbr:Scott", "Ridley Scott", "Sci-Fi"),
    "7": ("Thief (1981)", "dbr:Mann", "Michael Mann", "Crime"),
}


def dataset() -> Dataset:
    items = [Item(id=i, title=t, text=f"{t}. Genre {g}.") for i, (t, _, _, g) in MOVIES.items()]
    facts = []
    for i, (t, d, dl, g) in MOVIES.items():
        facts.append(Fact(head=i, relation="director", tail=d, head_label=t, tail_label=dl))
        facts.append(Fact(head=i, relation="genre", tail=f"genre:{g}", head_label=t, tail_label=g))
    inter = [
        ("u1", "1", 5.0, 1),
        ("u1", "3", 5.0, 2),
        ("u2", "1", 4.0, 1),
        ("u2", "2", 5.0, 2),
        ("u2", "4", 4.0, 3),
        ("u3", "3", 5.0, 1),
        ("u3", "4", 5.0, 2),
        ("u3", "7", 4.0, 3),
        ("u4", "5", 5.0, 1),
        ("u4", "6", 4.0, 2),
    ]
    interactions = [Interaction(user_id=u, item_id=i, rating=r, timestamp=t) for u, i, r, t in inter]
    return Dataset(name="tiny", items=items, facts=facts, interactions=interactions)


@pytest.fixture(params=["memory", pytest.param("disk", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def recommender(backend: str, settings: Settings, store: Any = None, **kw: Any) -> Recommender:
    """A recommender on in-memory stores (``memory``) or on the embedded SQLite file and Chroma folder (``disk``)."""
    if backend == "memory":
        store = store if store is not None else InMemoryGraphStore()
        return Recommender(
            settings, store=store, index=InMemoryItemIndex(HashEmbedder()), embedder=HashEmbedder(), **kw
        )
    return Recommender(settings, store=store, embedder=HashEmbedder(), **kw)


@pytest.fixture
def rec(backend: str, tmp_path: Path) -> Iterator[Recommender]:
    settings = Settings(
        data_dir=tmp_path,
        progress=False,
        retrieval={"ease_min_count": 1, "n_candidates": 6},
        ranker={"rerank_top": 4},
    )
    r = recommender(backend, settings, llm=FakeLLM(replies=['{"ranking": ["B", "A"]}'] * 5))
    r.ingest_dataset(dataset())
    yield r
    r.close()


def test_pipeline_recommends_unseen_items_with_grounded_reasons(rec: Recommender):
    result = rec.recommend("u1", k=3)
    ids = [it.item_id for it in result.items]
    assert len(ids) == 3 == len(set(ids))
    assert not {"1", "3"} & set(ids)
    assert result.ranking_mode == "verbalizer" and result.model == "fake-llm"
    # Michael Mann's other films connect to Heat, which u1 liked
    mann = [it for it in result.items if it.item_id in {"4", "7"}]
    assert mann and any("Michael Mann" in r.text for it in mann for r in it.reasons)
    for it in result.items:
        # every item has a reason; every reason cites at least one fact; every cited fact is stored, is about this
        # item, and comes with the item
        assert it.reasons, f"{it.item_id} has no reason"
        cited = [f for r in it.reasons for f in r.fact_ids]
        assert all(r.fact_ids for r in it.reasons), f"{it.item_id}: a reason cites no fact"
        stored = rec.store.get_facts(cited)
        assert set(cited) == set(stored), f"{it.item_id}: cites facts that are not stored"
        assert all(it.item_id in (f.head, f.tail) for f in stored.values())
        assert {f.id for f in it.facts} >= set(stored)
        context = [f for r in it.reasons for f in r.context_fact_ids]  # e.g. the liked film's side of a path
        assert set(rec.store.get_facts(context)) == set(context)


def test_listwise_answer_drives_order_with_weight_one(backend: str, tmp_path: Path):
    settings = Settings(data_dir=tmp_path, progress=False, retrieval={"ease_min_count": 1}, ranker={"llm_weight": 1.0})
    llm = FakeLLM(replies=['{"ranking": ["C", "A"]}'])
    r = recommender(backend, settings, llm=llm)
    r.ingest_dataset(dataset())
    base = r.recommend("u1", k=5, mode="none", diversity=0.0)
    result = r.recommend("u1", k=5, mode="listwise", diversity=0.0)
    order = [it.item_id for it in base.items]
    assert [it.item_id for it in result.items][:2] == [order[2], order[0]]
    assert result.repairs  # only 2 of 5 named: the rest filled, and said so
    r.close()


def test_llm_failure_is_flagged_not_raised(backend: str, tmp_path: Path):
    r = recommender(
        backend, Settings(data_dir=tmp_path, progress=False, retrieval={"ease_min_count": 1}), llm=FakeLLM(fail=True)
    )
    r.ingest_dataset(dataset())
    result = r.recommend("u1", k=3)
    assert result.fallback and "scripted failure" in (result.fallback_reason or "")
    assert len(result.items) == 3
    r.close()


def test_cold_start_and_exclude(rec: Recommender):
    result = rec.recommend("stranger", k=2, mode="none")
    assert result.cold_start and all("popularity" in it.sources for it in result.items)
    excluded = rec.recommend("u1", k=3, mode="none", exclude=["4", "7"])
    assert not {"4", "7"} & {it.item_id for it in excluded.items}


def test_a_dislike_is_never_a_taste_seed(rec: Recommender):
    """A user whose only interaction is a dislike (rating 1): no item is recommended for sharing the disliked item's
    director, and no reason says "which you liked"."""
    from knowrec.kg_store.base import GraphBatch

    rec.store.write(GraphBatch(interactions=[Interaction(user_id="grumpy", item_id="1", rating=1.0, timestamp=9)]))
    pipe = rec.pipeline("none")
    assert pipe.profile("grumpy").liked == ()
    result = rec.recommend("grumpy", k=3, mode="none")
    assert "1" not in {it.item_id for it in result.items}
    # three items, each explained (by its own facts): the next line is about reasons that exist
    assert len(result.items) == 3 and all(it.reasons for it in result.items)
    assert not any("which you liked" in r.text for it in result.items for r in it.reasons)
    assert all("kg" not in it.sources for it in result.items)  # no KG seeds from the disliked film


class ExplodingStore(SQLiteGraphStore):
    def write(self, batch, progress=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk on fire")


class ExplodingMemoryStore(InMemoryGraphStore):
    def write(self, batch, progress=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk on fire")


def test_failed_graph_write_restores_the_index(backend: str, tmp_path: Path):
    settings = Settings(data_dir=tmp_path, progress=False, retrieval={"ease_min_count": 1})
    store = ExplodingMemoryStore() if backend == "memory" else ExplodingStore(settings.graph_path)
    r = recommender(backend, settings, store=store)
    with pytest.raises(RuntimeError, match="disk on fire"):
        r.ingest_dataset(dataset())
    assert r.index.count() == 0
    assert store.stats()["items"] == 0
    assert not (settings.models_path / "ease.npz").exists()


def test_failed_update_restores_previous_documents(rec: Recommender, tmp_path: Path):
    before = rec.index.doc_hashes(["1"])
    changed = dataset()
    changed.items[0] = Item(id="1", title="Jaws (1975)", text="A different description now.")
    real_write = rec.store.write

    def boom(batch, progress=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("lost connection")

    rec.store.write = boom  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        rec.ingest_dataset(changed)
    rec.store.write = real_write  # type: ignore[method-assign]
    assert rec.index.doc_hashes(["1"]) == before
    assert rec.store.items(["1"])["1"].text == "Jaws (1975). Genre Thriller."


def test_unknown_item_in_interactions_names_line_and_writes_nothing(rec: Recommender, tmp_path: Path):
    stats = rec.store.stats()
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "items.csv").write_text("id,title\n8,Manhunter (1986)\n")
    (folder / "interactions.csv").write_text("user_id,item_id\nu1,8\nu1,999\n")
    with pytest.raises(InvalidInput) as info:
        rec.ingest(folder, format="generic")
    assert "interactions.csv:3" in str(info.value) and "999" in str(info.value)
    assert rec.store.stats() == stats
    assert "8" not in rec.index.ids()
    # interactions may reference items stored by an earlier ingest
    (folder / "interactions.csv").write_text("user_id,item_id\nu5,8\nu5,1\n")
    summary = rec.ingest(folder, format="generic")
    assert summary.new_items == 1 and summary.new_interactions == 2


def test_fixed_candidates_are_the_only_items_ranked(rec: Recommender):
    result = rec.recommend("u1", k=3, mode="none", candidates=["2", "5", "6", "1"], diversity=0.0)
    ids = [it.item_id for it in result.items]
    assert set(ids) <= {"2", "5", "6"}  # "1" was seen by u1
    assert len(ids) == 3


BAD_INPUTS = {
    "malformed-row": ({"items.csv": b'id,title\n8,"Unterminated\n'}, "items.csv:2"),
    "unknown-item": ({"items.csv": b"id,title\n8,M\n", "interactions.csv": b"user_id,item_id\nu1,8\nu1,404\n"}, ":3"),
    "duplicate-id": ({"items.csv": b"id,title\n8,A\n9,B\n8,C\n"}, "items.csv:4"),
    "empty-file": ({"items.csv": b""}, "empty"),
    "non-utf8": ({"items.csv": b"id,title\n8,A\n9,B\xff\xfe\n"}, "items.csv:3"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_named_and_leaves_stores_intact(rec: Recommender, tmp_path: Path, case: str):
    files, where = BAD_INPUTS[case]
    folder = tmp_path / case
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    stats, docs = rec.store.stats(), rec.index.count()
    before = [it.item_id for it in rec.recommend("u1", k=3, mode="none").items]
    with pytest.raises(InvalidInput) as info:
        rec.ingest(folder, format="generic")
    assert where in str(info.value)
    assert rec.store.stats() == stats and rec.index.count() == docs
    assert [it.item_id for it in rec.recommend("u1", k=3, mode="none").items] == before


def test_diversity_applies_even_when_k_covers_the_rerank_pool(rec: Recommender):
    # k (4) equals rerank_top (4): MMR must still choose/re-order, not be skipped
    plain = rec.recommend("u1", k=4, diversity=0.0)
    diverse = rec.recommend("u1", k=4, diversity=0.95)
    assert [it.item_id for it in plain.items] != [it.item_id for it in diverse.items]
