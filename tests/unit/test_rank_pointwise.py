"""The pointwise ranker: one yes/no question per candidate, scored by log P(yes) − log P(no)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from knowrec.agent.rank import NO_LABELS, YES_LABELS, PointwiseRanker, RankContext, RankItem, fuse_scores
from knowrec.errors import LLMError
from knowrec.types import Candidate, Fact
from tests.fakes import FakeLLM

CTX = RankContext(history_titles=("Heat (1995)", "Ronin (1998)", "Thief (1981)"), query="a tense crime film")


def items(n: int) -> list[RankItem]:
    out = []
    for i in range(n):
        fact = Fact(head=str(i), relation="director", tail=f"dbr:D{i}", tail_label=f"Director {i}")
        out.append(RankItem(candidate=Candidate(item_id=str(i), score=1.0 - i / 10), title=f"Movie {i}", facts=(fact,)))
    return out


class YesNoLLM(FakeLLM):
    """Answers each candidate's question with scripted yes/no log-probabilities, keyed by the title in the prompt.

    ``yes_no[title] = (logp_yes, logp_no)`` goes to the capitalised labels; the lower-case ones get a small mass.
    A title in ``fail_on`` raises :class:`LLMError`.
    """

    def __init__(self, yes_no: dict[str, tuple[float, float]], fail_on: Sequence[str] = ()) -> None:
        super().__init__()
        self.yes_no = yes_no
        self.fail_on = set(fail_on)
        self.last_prompt_tokens = 0

    def label_logprobs(self, prompt: str, labels: Sequence[str]) -> dict[str, float]:
        self.calls.append({"kind": "logprobs", "prompt": prompt, "labels": list(labels)})
        title = next(t for t in self.yes_no if f"Candidate: {t}\n" in prompt)
        if title in self.fail_on:
            raise LLMError(f"scripted failure on {title}", retryable=True)
        self.last_prompt_tokens = len(prompt.split())
        y, n = self.yes_no[title]
        out = {"Yes": y, "No": n, "yes": -20.0, "no": -20.0}
        return {lab: out[lab] for lab in labels}


def test_order_follows_yes_minus_no_at_weight_one():
    # log-odds: Movie 0 → −2, Movie 1 → 0, Movie 2 → +3, Movie 3 → +1
    llm = YesNoLLM({"Movie 0": (-3.0, -1.0), "Movie 1": (-1.0, -1.0), "Movie 2": (-0.1, -3.1), "Movie 3": (-1.0, -2.0)})
    res = PointwiseRanker(llm, llm_weight=1.0).rank(CTX, items(4), 4)
    assert res.order == ["2", "3", "1", "0"] and not res.fallback and not res.repairs
    assert [c["labels"] for c in llm.calls] == [[*YES_LABELS, *NO_LABELS]] * 4  # one call per candidate
    # llm_scores: P(yes) normalised over {yes, no}; equal log-probs → 0.5 (the lower-case forms add equal mass)
    assert res.llm_scores["1"] == pytest.approx(0.5)
    assert res.llm_scores["2"] == pytest.approx(1 / (1 + math.exp(-3.0)), abs=1e-6)
    assert all(0.0 < p < 1.0 for p in res.llm_scores.values())
    assert res.prompt is not None and res.prompt.ref == "rank_pointwise@2"
    assert res.model == "fake-llm"
    assert res.usage["prompt_tokens"] == sum(len(c["prompt"].split()) for c in llm.calls)
    assert res.usage["llm_calls"] == 4


def test_weight_zero_is_retrieval_order_and_intermediate_weights_fuse():
    scores = {"Movie 0": (-3.0, -0.1), "Movie 1": (-2.0, -0.5), "Movie 2": (-0.5, -2.0), "Movie 3": (-0.1, -3.0)}
    retrieval = ["0", "1", "2", "3"]
    llm_order = ["3", "2", "1", "0"]
    assert PointwiseRanker(YesNoLLM(scores), llm_weight=0.0).rank(CTX, items(4), 4).order == retrieval
    for w in (0.3, 0.5, 0.7):
        res = PointwiseRanker(YesNoLLM(scores), llm_weight=w).rank(CTX, items(4), 4)
        expected = fuse_scores(retrieval, llm_order, w)
        assert res.final_scores == pytest.approx(expected)
        assert res.order == sorted(retrieval, key=lambda i: (-expected[i], retrieval.index(i)))
    assert PointwiseRanker(YesNoLLM(scores), llm_weight=0.3).rank(CTX, items(4), 4).order == retrieval
    assert PointwiseRanker(YesNoLLM(scores), llm_weight=0.7).rank(CTX, items(4), 4).order == llm_order


def test_one_failing_candidate_keeps_a_neutral_score_and_is_repaired():
    # successful log-odds: Movie 0 → −3, Movie 2 → +3, Movie 3 → +1 → median +1; failed Movie 1 ties with Movie 3
    # and wins the tie on retrieval order
    scores = {"Movie 0": (-3.1, -0.1), "Movie 1": (0.0, 0.0), "Movie 2": (-0.1, -3.1), "Movie 3": (-1.0, -2.0)}
    res = PointwiseRanker(YesNoLLM(scores, fail_on=["Movie 1"]), llm_weight=1.0).rank(CTX, items(4), 4)
    assert not res.fallback
    assert res.order == ["2", "1", "3", "0"]
    assert len(res.repairs) == 1 and "neutral" in res.repairs[0] and "scripted failure on Movie 1" in res.repairs[0]
    assert "1" not in res.llm_scores and set(res.llm_scores) == {"0", "2", "3"}


def test_all_candidates_failing_fall_back_flagged():
    res = PointwiseRanker(FakeLLM(fail=True), llm_weight=1.0).rank(CTX, items(3), 3)
    assert res.fallback and res.order == ["0", "1", "2"]
    assert "all 3 candidates" in (res.fallback_reason or "") and "scripted failure" in (res.fallback_reason or "")
    assert res.prompt is not None and res.prompt.ref == "rank_pointwise@2"


def test_missing_yes_and_no_counts_as_a_failure():
    # a server that returns neither label among its top log-probabilities: −inf for all → per-candidate failure
    res = PointwiseRanker(FakeLLM(logprobs={}), llm_weight=1.0).rank(CTX, items(3), 3)
    assert res.fallback and "finite" in (res.fallback_reason or "")


def test_one_sided_logprob_gives_a_finite_probability():
    llm = FakeLLM(logprobs={"Yes": -0.5})  # "No" absent → P(yes) = 1
    res = PointwiseRanker(llm, llm_weight=1.0).rank(CTX, items(2), 2)
    assert not res.fallback and res.llm_scores == {"0": 1.0, "1": 1.0}


def test_prompts_of_one_user_share_the_history_prefix():
    llm = YesNoLLM({"Movie 0": (-1.0, -2.0), "Movie 1": (-2.0, -1.0)})
    PointwiseRanker(llm).rank(CTX, items(2), 2)
    first, second = (c["prompt"] for c in llm.calls)
    common = first[: next(n for n, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)]
    for title in CTX.history_titles:
        assert title in common
    assert CTX.query is not None and CTX.query in common
    assert common.endswith("Candidate: Movie ")  # the prompts diverge only inside the candidate block
    assert first.index("Heat (1995)") < first.index("Candidate: Movie 0")
    assert "director: Director 0" in first
    assert first.rstrip().endswith("assistant:")  # the answer token is read right after the assistant turn opens


def test_single_candidate_needs_no_llm():
    llm = FakeLLM()
    res = PointwiseRanker(llm).rank(CTX, items(1), 1)
    assert res.order == ["0"] and not llm.calls


def test_recommender_and_eval_know_the_pointwise_mode(tmp_path):
    from knowrec import Recommender, Settings
    from knowrec.eval.config import PIPELINE_SYSTEMS
    from knowrec.testing import InMemoryGraphStore, InMemoryItemIndex
    from tests.fakes import HashEmbedder
    from tests.unit.test_ingest_pipeline import dataset

    assert PIPELINE_SYSTEMS["knowrec-pointwise"]["call"] == {"mode": "pointwise"}
    settings = Settings(data_dir=tmp_path, progress=False, retrieval={"ease_min_count": 1}, ranker={"llm_weight": 1.0})
    llm = FakeLLM(logprobs={"Yes": -1.0, "No": -1.0})  # every candidate neutral → retrieval order kept
    r = Recommender(
        settings,
        store=InMemoryGraphStore(),
        index=InMemoryItemIndex(HashEmbedder()),
        embedder=HashEmbedder(),
        llm=llm,
    )
    try:
        r.ingest_dataset(dataset())
        base = r.recommend("u1", k=4, mode="none", diversity=0.0)
        result = r.recommend("u1", k=4, mode="pointwise", diversity=0.0)
        assert result.ranking_mode == "pointwise" and result.prompt_id == "rank_pointwise"
        assert [it.item_id for it in result.items] == [it.item_id for it in base.items]
        assert not result.fallback and all(it.llm_score == pytest.approx(0.5) for it in result.items)
        assert result.usage["llm_calls"] == len([c for c in llm.calls if c["kind"] == "logprobs"]) >= 4
        assert Settings(ranker={"mode": "pointwise"}).ranker.mode == "pointwise"
    finally:
        r.close()
