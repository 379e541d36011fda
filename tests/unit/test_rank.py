import math

import pytest

from knowrec.agent.rank import (
    ListwiseRanker,
    PointwiseRanker,
    RankContext,
    RankItem,
    RetrievalRanker,
    VerbalizerRanker,
    fuse_scores,
    rank_normalise,
    shown_order,
)
from knowrec.errors import InvalidInput
from knowrec.types import Candidate, Fact
from tests.fakes import FakeLLM

CTX = RankContext(history_titles=("Heat (1995)", "Ronin (1998)"), query=None)


def items(n: int) -> list[RankItem]:
    out = []
    for i in range(n):
        fact = Fact(head=str(i), relation="director", tail=f"dbr:D{i}", tail_label=f"Director {i}")
        out.append(RankItem(candidate=Candidate(item_id=str(i), score=1.0 - i / 10), title=f"Movie {i}", facts=(fact,)))
    return out


def test_rank_normalise_and_fusion():
    assert rank_normalise(["a", "b", "c"]) == {"a": 1.0, "b": 0.5, "c": 0.0}
    fused = fuse_scores(["a", "b", "c"], ["c", "b", "a"], 0.3)
    assert fused == pytest.approx({"a": 0.7, "b": 0.5, "c": 0.3})


def test_retrieval_ranker_keeps_order():
    res = RetrievalRanker().rank(CTX, items(4), 3)
    assert res.order == ["0", "1", "2", "3"] and not res.fallback


def test_verbalizer_scores_every_label_and_fuses():
    llm = FakeLLM(logprobs={"A": -5.0, "B": -4.0, "C": -3.0, "D": -0.1})
    res = VerbalizerRanker(llm, llm_weight=1.0).rank(CTX, items(4), 4)
    assert res.order == ["3", "2", "1", "0"]  # pure LLM order at weight 1
    assert res.llm_scores["3"] == pytest.approx(math.exp(-0.1))
    assert llm.calls[0]["labels"] == ["A", "B", "C", "D"]
    prompt = llm.calls[0]["prompt"]
    # history comes before the candidates (prefix caching), facts are shown
    assert prompt.index("Heat (1995)") < prompt.index("A. Movie 0")
    assert "director: Director 0" in prompt
    assert res.prompt is not None and res.prompt.ref == "rank_verbalizer@2"


def test_verbalizer_shuffle_shows_a_seeded_order_and_maps_labels_back():
    cands = items(6)
    perm = shown_order([it.candidate.item_id for it in cands])
    assert perm != list(range(6))  # this list is shown in another order …
    llm = FakeLLM(logprobs={"A": -0.1, "B": -1.0, "C": -2.0, "D": -3.0, "E": -4.0, "F": -5.0})
    res = VerbalizerRanker(llm, llm_weight=1.0, shuffle=True).rank(CTX, cands, 6)
    prompt = llm.calls[0]["prompt"]
    for label, p in zip("ABCDEF", perm, strict=True):  # … labelled in the order shown
        assert f"{label}. Movie {p}" in prompt
    assert res.order == [str(p) for p in perm]  # the LLM's preference for A, B, … lands on the items shown there
    assert res.llm_scores[str(perm[0])] == pytest.approx(math.exp(-0.1))
    again = FakeLLM(logprobs={"A": -0.1})
    VerbalizerRanker(again, shuffle=True).rank(CTX, cands, 6)
    assert again.calls[0]["prompt"] == prompt  # the same candidates are always shown the same way
    plain = FakeLLM(logprobs={"A": -0.1})
    VerbalizerRanker(plain).rank(CTX, cands, 6)
    assert "A. Movie 0" in plain.calls[0]["prompt"]  # off by default: retrieval's order


def test_verbalizer_weight_zero_is_retrieval_order():
    llm = FakeLLM(logprobs={"A": -5.0, "B": -4.0, "C": -3.0, "D": -0.1})
    res = VerbalizerRanker(llm, llm_weight=0.0).rank(CTX, items(4), 4)
    assert res.order == ["0", "1", "2", "3"]


@pytest.mark.parametrize("ranker", [VerbalizerRanker, ListwiseRanker, PointwiseRanker])
def test_at_weight_zero_the_llm_is_not_asked(ranker):
    llm = FakeLLM(logprobs={"A": -5.0, "B": -4.0, "C": -3.0, "D": -0.1})
    res = ranker(llm, llm_weight=0.0).rank(CTX, items(4), 4)
    assert llm.calls == [] and res.model == "none" and not res.llm_scores and not res.fallback
    assert res.order == ["0", "1", "2", "3"]
    asked = FakeLLM(logprobs={"A": -5.0, "B": -4.0, "C": -3.0, "D": -0.1})
    ranker(asked, llm_weight=0.1).rank(CTX, items(4), 4)
    assert asked.calls  # any other weight asks it


def test_verbalizer_llm_error_falls_back_flagged():
    res = VerbalizerRanker(FakeLLM(fail=True)).rank(CTX, items(3), 3)
    assert res.fallback and "scripted failure" in (res.fallback_reason or "")
    assert res.order == ["0", "1", "2"]


def test_listwise_valid_answer():
    llm = FakeLLM(replies=['{"ranking": ["C", "A", "B"]}'])
    res = ListwiseRanker(llm, llm_weight=1.0).rank(CTX, items(3), 3)
    assert res.order == ["2", "0", "1"] and not res.fallback and not res.repairs
    schema = llm.calls[0]["schema"]
    assert schema["properties"]["ranking"]["items"]["enum"] == ["A", "B", "C"]


def test_listwise_repairs_unknown_duplicate_and_gaps():
    llm = FakeLLM(replies=['{"ranking": ["B", "B", "Q", "x"]}'])
    res = ListwiseRanker(llm, llm_weight=1.0).rank(CTX, items(4), 3)
    assert res.order == ["1", "0", "2", "3"]  # B first, the rest filled from retrieval order
    assert len(set(res.order)) == 4
    assert not res.fallback
    text = " ".join(res.repairs)
    assert "unknown" in text and "duplicate" in text and "filled" in text


def test_listwise_garbage_falls_back():
    """An answer without a ranking list, or no JSON at all: the LLM was asked (once, about these candidates), the
    retrieval order stands, and the result says why."""
    llm = FakeLLM(replies=['{"nothing": 1}'])
    res = ListwiseRanker(llm).rank(CTX, items(3), 3)
    assert [c["kind"] for c in llm.calls] == ["chat"]
    assert llm.calls[0]["schema"]["properties"]["ranking"]["items"]["enum"] == ["A", "B", "C"]
    assert res.fallback and res.order == ["0", "1", "2"]
    assert res.fallback_reason is not None
    assert "no 'ranking' list" in res.fallback_reason and """'{"nothing": 1}'""" in res.fallback_reason
    llm = FakeLLM(replies=["not json"])
    res = ListwiseRanker(llm).rank(CTX, items(3), 3)
    assert [c["kind"] for c in llm.calls] == ["chat"]
    assert res.fallback and res.order == ["0", "1", "2"]
    assert res.fallback_reason is not None and "not JSON: 'not json'" in res.fallback_reason


def test_too_many_candidates_rejected():
    with pytest.raises(InvalidInput, match="at most 26 candidates"):
        VerbalizerRanker(FakeLLM()).rank(CTX, items(27), 3)


class WordCountingLLM(FakeLLM):
    """A fake whose tokens are whitespace-separated words (so the budget is easy to reason about)."""

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def rich_items(n: int, facts: int) -> list[RankItem]:
    out = []
    for i in range(n):
        fs = tuple(
            Fact(head=str(i), relation="starring", tail=f"dbr:A{i}_{k}", tail_label=f"Actor {i} {k}")
            for k in range(facts)
        )
        out.append(RankItem(candidate=Candidate(item_id=str(i), score=1.0), title=f"Movie {i}", facts=fs))
    return out


def test_titles_are_normalised_in_the_prompt():
    llm = FakeLLM(logprobs={"A": -1.0, "B": -2.0})
    ctx = RankContext(history_titles=("Matrix, The (1999)",))
    its = [RankItem(Candidate(item_id="1", score=1.0), "Good, the Bad and the Ugly, The (Buono, il brutto) (1966)")]
    its.append(RankItem(Candidate(item_id="2", score=0.5), "Seven (a.k.a. Se7en) (1995)"))
    VerbalizerRanker(llm).rank(ctx, its, 2)
    prompt = llm.calls[0]["prompt"]
    assert "- The Matrix (1999)" in prompt and "A. The Good, the Bad and the Ugly (1966)" in prompt
    assert "B. Seven (1995)" in prompt and "Buono" not in prompt


def test_the_prompt_keeps_to_its_token_budget_facts_first_then_old_history():
    history = tuple(f"Film {k} (19{50 + k})" for k in range(30))
    ctx = RankContext(history_titles=history)
    its = rich_items(10, facts=3)
    full = WordCountingLLM(logprobs={"A": -1.0})
    VerbalizerRanker(full, prompt_tokens=None).rank(ctx, its, 5)
    size = full.count_tokens(full.calls[0]["prompt"])
    assert "Actor 9 2" in full.calls[0]["prompt"] and "Film 29" in full.calls[0]["prompt"]
    # a little smaller: facts go, one per candidate at a time (the last ones first), the whole history stays
    for budget, kept in ((size - 10, 2), (size - 50, 1)):
        mid = WordCountingLLM(logprobs={"A": -1.0})
        VerbalizerRanker(mid, prompt_tokens=budget).rank(ctx, its, 5)
        p = mid.calls[0]["prompt"]
        assert mid.count_tokens(p) <= budget
        assert f"Actor 9 {kept - 1}" in p and f"Actor 9 {kept}" not in p and "Film 29" in p
    # much smaller: one fact each and only the most recent history titles (most recent first)
    small = WordCountingLLM(logprobs={"A": -1.0})
    VerbalizerRanker(small, prompt_tokens=size // 2).rank(ctx, its, 5)
    p = small.calls[0]["prompt"]
    assert small.count_tokens(p) <= size // 2
    assert all(f"Actor {i} 0" in p for i in range(10)) and "Film 0 (1950)" in p and "Film 29" not in p


def test_auto_engines_follow_what_is_installed(monkeypatch: pytest.MonkeyPatch):
    """``auto``: torch scores when torch, transformers, gguf and accelerate are there; llama.cpp generates when
    llama-cpp-python is there, torch (xgrammar) otherwise; an explicit choice is kept."""
    import importlib.util

    from knowrec.agent.llm.torch_engine import generation_engine, scoring_engine

    missing: set[str] = set()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    missing.update({"llama_cpp"})
    assert generation_engine("auto") == "torch" and generation_engine("llama_cpp") == "llama_cpp"
    missing.clear()
    if real("llama_cpp") is not None:
        assert generation_engine("auto") == "llama_cpp"
    missing.update({"gguf"})
    assert scoring_engine("auto") == "llama_cpp" and scoring_engine("torch") == "torch"
