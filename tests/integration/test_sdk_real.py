"""The SDK against the real bundled LLM, embedder, SQLite and Chroma (a slice of the demo data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowrec import InvalidInput, Recommender, Settings
from knowrec.datasets import load_demo, subsample
from knowrec.kg_store.chroma_index import ChromaItemIndex

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def rec(demo_dir: Path) -> Recommender:
    r = Recommender(Settings(data_dir=demo_dir, progress=False))
    yield r
    r.close()


def _grounded(r: Recommender, item_id: str, fact_ids: tuple[str, ...]) -> bool:
    stored = r.store.get_facts(list(fact_ids))
    return bool(fact_ids) and all(fid in stored and item_id in (stored[fid].head, stored[fid].tail) for fid in fact_ids)


def test_listwise_mode_returns_valid_constrained_ranking(rec: Recommender):
    result = rec.recommend("2", k=5, mode="listwise")
    assert result.ranking_mode == "listwise" and result.prompt_id == "rank_listwise"
    ids = [it.item_id for it in result.items]
    assert len(ids) == 5 == len(set(ids))
    seen = {x.item_id for x in rec.store.history("2")}
    assert not seen & set(ids)
    # the LLM either answered (usage recorded) or the fallback is flagged — never silently
    assert result.fallback or result.usage.get("completion_tokens", 0) > 0
    assert all(it.reasons for it in result.items)


def test_verbalizer_records_llm_scores_and_fusion(rec: Recommender):
    result = rec.recommend("3", k=5, diversity=0.0)
    assert not result.fallback
    scored = [it for it in result.items if it.llm_score is not None]
    assert scored, "verbalizer must attach label probabilities"
    assert all(0.0 <= it.llm_score <= 1.0 for it in scored)
    scores = [it.score for it in result.items]
    assert scores == sorted(scores, reverse=True)  # no diversity: fused score order


def test_llm_explanations_are_grounded_or_dropped(demo_dir: Path):
    r = Recommender(Settings(data_dir=demo_dir, progress=False, explain={"mode": "llm", "llm_items": 2}))
    result = r.recommend("1", k=3, mode="none")
    for it in result.items:
        assert it.reasons
        for reason in it.reasons:
            assert _grounded(r, it.item_id, reason.fact_ids)
    assert "explain_completion_tokens" in result.usage
    r.close()


def test_query_steers_cold_start(rec: Recommender):
    result = rec.recommend(None, k=5, query="animated movie about toys", mode="none")
    assert result.cold_start
    assert any("vector" in it.sources for it in result.items)
    assert any("Toy" in it.title or "Anim" in " ".join(r.text for r in it.reasons) for it in result.items)


def test_diversity_changes_the_list_but_keeps_it_valid(rec: Recommender):
    plain = rec.recommend("4", k=8, diversity=0.0, mode="none")
    diverse = rec.recommend("4", k=8, diversity=0.9, mode="none")
    assert len({it.item_id for it in diverse.items}) == 8
    assert [it.item_id for it in plain.items] != [it.item_id for it in diverse.items]


def test_reingest_is_idempotent_and_bad_input_changes_nothing(demo_dir: Path, tmp_path: Path):
    r = Recommender(Settings(data_dir=demo_dir, progress=False))
    before = r.store.stats()
    indexed = r.index.count()
    before_rec = [it.item_id for it in r.recommend("1", k=5, mode="none").items]

    again = r.ingest_dataset(subsample(load_demo(), 8))
    assert (again.new_items, again.new_facts, again.new_interactions, again.indexed) == (0, 0, 0, 0)
    assert r.store.stats() == before

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "items.csv").write_text("id,title\nnew1,A brand new item\nnew2,Another\n")
    (bad / "interactions.csv").write_text("user_id,item_id,rating\nu9,new1,5\nu9,new2,oops\n")
    with pytest.raises(InvalidInput, match=r"interactions\.csv:3.*rating"):
        r.ingest(bad, format="generic")
    (bad / "interactions.csv").write_text("user_id,item_id,rating\nu9,new1,5\nu9,ghost,4\n")
    with pytest.raises(InvalidInput, match=r"interactions\.csv:3.*ghost"):
        r.ingest(bad, format="generic")
    assert r.store.stats() == before
    assert r.index.count() == indexed
    assert [it.item_id for it in r.recommend("1", k=5, mode="none").items] == before_rec
    r.close()


def test_warm_up_loads_the_in_process_llm_when_the_mode_ranks_with_it(demo_dir: Path):
    rec = Recommender(Settings(data_dir=demo_dir, progress=False))  # verbalizer on the bundled model, in process
    assert "llm" not in rec.warm_up(mode="none")
    llm = rec.llm
    engines = [getattr(llm, "scoring", llm), getattr(llm, "generation", llm)]  # torch and llama.cpp by default

    def loaded(engine: object) -> bool:
        return getattr(engine, "_model", None) is not None or getattr(engine, "_llm", None) is not None

    assert not any(loaded(e) for e in engines)  # nothing loaded before
    assert "llm" in rec.warm_up()
    assert all(loaded(e) for e in engines)
    rec.close()


def test_warm_up_loads_what_the_first_call_needs_and_changes_no_answer(demo_dir: Path):
    cold = Recommender(Settings(data_dir=demo_dir, progress=False))
    warm = Recommender(Settings(data_dir=demo_dir, progress=False))
    timings = warm.warm_up(mode="none")
    assert set(timings) == {"pipeline", "kg_links", "vectors"}
    index = warm.index
    assert isinstance(index, ChromaItemIndex) and len(index._vectors) == index.count() > 0
    for user in ("1", "7", "42"):
        a, b = cold.recommend(user, k=8, mode="none"), warm.recommend(user, k=8, mode="none")
        assert [x.item_id for x in a.items] == [x.item_id for x in b.items] and a.fusion == b.fusion
        assert [x.reasons for x in a.items] == [x.reasons for x in b.items]
        assert [x.score for x in a.items] == pytest.approx([x.score for x in b.items])
    cold.close()
    warm.close()
