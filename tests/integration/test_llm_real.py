"""The in-process llama.cpp client with the bundled SmolLM2 model."""

from __future__ import annotations

import math

import pytest

from knowrec.agent.llm.llama_cpp import LlamaCppClient, bundled_llm_path
from knowrec.errors import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def llm() -> LlamaCppClient:
    return LlamaCppClient(bundled_llm_path(), n_ctx=2048)


PROMPT_MSGS = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "A is a cat, B is a car, C is a cloud. Which is an animal? Answer with the letter."},
]


def test_label_logprobs_match_llama_cpp_reference(llm: LlamaCppClient):
    from llama_cpp import Llama

    prompt = llm.format_chat(PROMPT_MSGS)
    ours = llm.label_logprobs(prompt, ["A", "B", "C"])
    ref = Llama(model_path=str(bundled_llm_path()), n_ctx=2048, logits_all=True, verbose=False)
    top = ref.create_completion(prompt, max_tokens=1, logprobs=10, temperature=0)["choices"][0]["logprobs"]
    ref_top = top["top_logprobs"][0]
    for label in ("A", "B", "C"):
        assert label in ref_top
        assert ours[label] == pytest.approx(float(ref_top[label]), abs=1e-3)
    assert sum(math.exp(v) for v in ours.values()) < 1.0


def test_prefix_reuse_and_memo_give_identical_answers(llm: LlamaCppClient):
    first = llm.format_chat(PROMPT_MSGS)
    other = llm.format_chat([PROMPT_MSGS[0], {"role": "user", "content": "Pick X or Y."}])
    a = llm.label_logprobs(first, ["A", "B"])
    llm.label_logprobs(other, ["X", "Y"])  # moves the KV cache elsewhere (shared system prefix)
    hits = llm.cache_hits
    b = llm.label_logprobs(first, ["A", "B"])
    assert a == b and llm.cache_hits == hits + 1
    llm.cache_size = 0
    llm._memo.clear()
    c = llm.label_logprobs(first, ["A", "B"])  # recomputed through the prefix-reuse path
    llm.cache_size = 512
    assert c == pytest.approx(a, abs=1e-4)


def test_schema_constrains_the_answer(llm: LlamaCppClient):
    schema = {
        "type": "object",
        "properties": {"ranking": {"type": "array", "items": {"type": "string", "enum": ["A", "B", "C"]}}},
        "required": ["ranking"],
    }
    reply = llm.chat(PROMPT_MSGS, schema=schema, max_tokens=40)
    assert isinstance(reply.parsed, dict) and "ranking" in reply.parsed
    assert all(label in {"A", "B", "C"} for label in reply.parsed["ranking"])
    assert reply.usage["completion_tokens"] > 0 and reply.model.startswith("SmolLM2")


def test_multi_token_labels_are_refused(llm: LlamaCppClient):
    with pytest.raises(ConfigError, match="one token"):
        llm.label_token_ids(["Alpha Centauri"])


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        LlamaCppClient(tmp_path / "nope.gguf").verify()


def test_pointwise_ranking_with_the_bundled_model(llm: LlamaCppClient):
    from knowrec.agent.rank import NO_LABELS, YES_LABELS, PointwiseRanker, RankContext, RankItem
    from knowrec.types import Candidate, Fact

    # the pointwise ranker reads these as single tokens right after the assistant turn opens
    assert len(llm.label_token_ids([*YES_LABELS, *NO_LABELS])) == 4
    titles = ["Miami Vice (2006)", "Toy Story (1995)", "Manhunter (1986)", "Notting Hill (1999)", "Se7en (1995)"]
    items = [
        RankItem(
            candidate=Candidate(item_id=str(i), score=1.0 - i / 10),
            title=t,
            facts=(Fact(head=str(i), relation="year", tail=t[-5:-1]),),
        )
        for i, t in enumerate(titles)
    ]
    ctx = RankContext(history_titles=("Heat (1995)", "Ronin (1998)", "Collateral (2004)"))
    res = PointwiseRanker(llm, llm_weight=1.0).rank(ctx, items, 5)
    assert not res.fallback and not res.repairs
    assert sorted(res.order) == [str(i) for i in range(5)]  # a permutation of the candidates
    probs = list(res.llm_scores.values())
    assert len(probs) == 5 and all(math.isfinite(p) and 0.0 < p < 1.0 for p in probs)
    assert len({round(p, 4) for p in probs}) >= 4  # the candidates are told apart
    assert res.usage["prompt_tokens"] > 5 * 50 and res.model.startswith("SmolLM2")
