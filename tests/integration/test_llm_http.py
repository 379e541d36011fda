"""OpenAIHTTPClient against a real OpenAI-compatible server: ``python -m llama_cpp.server`` with the bundled SmolLM2
(the CPU stand-in for vLLM; fixture ``llm_server`` in tests/servers_llm.py)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pytest

from knowrec import Recommender, Settings
from knowrec.agent.llm.http import OpenAIHTTPClient
from knowrec.agent.llm.llama_cpp import LlamaCppClient, bundled_llm_path
from knowrec.agent.rank import LABELS, ListwiseRanker, RankContext, RankItem, RankResult, VerbalizerRanker
from knowrec.errors import ConfigError
from knowrec.types import Candidate, Fact
from tests.fakes import HashEmbedder
from tests.servers_llm import MODEL_ALIAS, start_llm_server
from tests.unit.test_ingest_pipeline import dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DIALECT = os.environ.get("KNOWREC_TEST_LLM_DIALECT", "llama_cpp")

CTX = RankContext(history_titles=("Heat (1995)", "Collateral (2004)", "Ronin (1998)"))
FILMS = [
    ("Thief (1981)", "Michael Mann"),
    ("Toy Story (1995)", "John Lasseter"),
    ("The Insider (1999)", "Michael Mann"),
    ("Mamma Mia! (2008)", "Phyllida Lloyd"),
    ("Manhunter (1986)", "Michael Mann"),
]


def rank_items(films: list[tuple[str, str]] = FILMS) -> list[RankItem]:
    out = []
    for n, (title, director) in enumerate(films):
        fact = Fact(head=str(n), relation="director", tail=f"dbr:{director}", head_label=title, tail_label=director)
        out.append(RankItem(candidate=Candidate(item_id=str(n), score=1.0 - n / 10), title=title, facts=(fact,)))
    return out


@pytest.fixture(scope="module")
def http_llm(llm_server: str) -> Iterator[OpenAIHTTPClient]:
    model = None if os.environ.get("KNOWREC_TEST_LLM_URL") else MODEL_ALIAS
    llm = OpenAIHTTPClient(llm_server, model, dialect=DIALECT, timeout_s=120, max_retries=1)  # type: ignore[arg-type]
    llm.verify()
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def local_llm() -> LlamaCppClient:
    return LlamaCppClient(bundled_llm_path(), n_ctx=4096)


def test_listwise_over_http_is_json_constrained_to_the_label_enum(http_llm: OpenAIHTTPClient):
    ranker = ListwiseRanker(http_llm, llm_weight=0.5)
    labels = list(LABELS[: len(FILMS)])
    reply = http_llm.chat(
        [{"role": "user", "content": "Rank the films A-E for a fan of Michael Mann: " + ", ".join(labels)}],
        schema=ranker.schema(labels, 3),
        max_tokens=30,
    )
    assert isinstance(reply.parsed, dict) and isinstance(reply.parsed["ranking"], list)
    assert reply.parsed["ranking"] and set(reply.parsed["ranking"]) <= set(labels)
    assert reply.usage["prompt_tokens"] > 0 and reply.usage["completion_tokens"] > 0
    res = ranker.rank(CTX, rank_items(), 3)
    assert not res.fallback, res.fallback_reason
    assert sorted(res.order) == sorted(str(n) for n in range(len(FILMS)))


def test_answered_model_is_recorded(http_llm: OpenAIHTTPClient, llm_server: str):
    reply = http_llm.chat([{"role": "user", "content": "Say hi."}], max_tokens=3)
    assert reply.model == http_llm.last_model
    if not os.environ.get("KNOWREC_TEST_LLM_URL"):
        assert reply.model == MODEL_ALIAS  # llama.cpp --model_alias answers with the alias
        auto = OpenAIHTTPClient(llm_server, None, dialect="llama_cpp")
        auto.verify()  # resolves the model from GET /models
        assert auto.model_id == MODEL_ALIAS
        auto.close()


def test_verbalizer_over_http_gives_finite_scores(http_llm: OpenAIHTTPClient):
    res = VerbalizerRanker(http_llm, llm_weight=0.5).rank(CTX, rank_items(), 3)
    assert not res.fallback, res.fallback_reason
    assert any(v > 0 for v in res.llm_scores.values())
    assert all(math.isfinite(v) for v in res.final_scores.values())
    assert res.usage["prompt_tokens"] > 50


def test_label_logprobs_agree_with_in_process_client(http_llm: OpenAIHTTPClient, local_llm: LlamaCppClient):
    if os.environ.get("KNOWREC_TEST_LLM_URL"):
        pytest.fail("this comparison needs the bundled SmolLM2 server; unset KNOWREC_TEST_LLM_URL", pytrace=False)
    prompts = [
        [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": q}]
        for q in (
            "A is a cat, B is a car, C is a cloud. Which is an animal? Answer with the letter.",
            "Which film is by Michael Mann? A: Toy Story, B: Heat, C: Frozen. Answer with the letter.",
            "Is Paris in France? Answer yes or no.",
        )
    ]
    worst = 0.0
    compared = 0
    for msgs in prompts:
        prompt = http_llm.format_chat(msgs)
        assert prompt == local_llm.format_chat(msgs)  # client-side ChatML == the GGUF's own template
        top = http_llm.top_logprobs(prompt)
        labels = [lab for lab in ("A", "B", "C", "yes", "no", "Yes", "No") if lab in top]
        assert labels, top
        remote = http_llm.label_logprobs(prompt, labels)
        local = local_llm.label_logprobs(prompt, labels)
        for lab in labels:
            if f" {lab}" in top:  # merged whitespace variant: compare the raw token instead
                assert remote[lab] >= top[lab]
                continue
            worst = max(worst, abs(remote[lab] - local[lab]))
            compared += 1
    print(f"\nHTTP vs in-process label log-probabilities: {compared} compared, max |Δ| = {worst:.2e}")
    assert compared >= 5 and worst < 0.05


def test_yes_no_are_single_tokens_on_the_server(http_llm: OpenAIHTTPClient):
    http_llm.check_labels(["yes", "no", "A", "B", "Z"])
    with pytest.raises(ConfigError, match="one token"):
        http_llm.check_labels(["Alpha Centauri"])


@pytest.mark.parametrize("mode", ["verbalizer", "listwise"])
def test_recommender_with_http_backend_ranks_end_to_end(llm_server: str, tmp_path: Path, mode: str):
    llm_cfg = {"backend": "http", "base_url": llm_server, "dialect": DIALECT, "timeout_s": 120}
    if not os.environ.get("KNOWREC_TEST_LLM_URL"):
        llm_cfg["model"] = MODEL_ALIAS
    settings = Settings(
        data_dir=tmp_path,
        progress=False,
        retrieval={"ease_min_count": 1, "n_candidates": 6},
        ranker={"rerank_top": 4, "mode": mode},
        llm=llm_cfg,
    )
    with Recommender(settings, embedder=HashEmbedder()) as rec:
        assert isinstance(rec.llm, OpenAIHTTPClient)
        assert rec.verify()["llm"] == rec.llm.model_id
        rec.ingest_dataset(dataset())
        result = rec.recommend("u1", k=3)
        assert len(result.items) == 3 and not result.fallback, result.fallback_reason
        assert result.ranking_mode == mode and MODEL_ALIAS in result.model
        assert rec.llm.stats["failures"] == 0
        rec.llm.close()


def test_killing_the_server_mid_batch_gives_flagged_fallbacks(tmp_path: Path):
    server = start_llm_server(tmp_path)
    llm = OpenAIHTTPClient(
        server.base_url, MODEL_ALIAS, dialect="llama_cpp", timeout_s=60, max_retries=2, backoff_s=0.05, concurrency=4
    )
    ranker = VerbalizerRanker(llm, llm_weight=0.5)
    # distinct prompts (llama.cpp reuses the common prefix, so each is a fraction of a second on CPU)
    batches = [
        RankContext(history_titles=(f"Heat (1995) #{n}", "Collateral (2004)"), query=f"request {n}") for n in range(16)
    ]
    results: list[RankResult] = []
    errors: list[BaseException] = []
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(ranker.rank, ctx, rank_items(), 3) for ctx in batches]
            done = iter(as_completed(futures))
            first = next(done)
            results.append(first.result())
            server.kill()  # part-way: some answered, the rest in flight or queued
            killed_at = time.monotonic()
            for fut in done:
                try:
                    results.append(fut.result(timeout=120))
                except BaseException as exc:  # the test is that nothing escapes
                    errors.append(exc)
        drain_s = time.monotonic() - killed_at
    finally:
        server.stop()
        llm.close()
    assert errors == []
    assert len(results) == len(batches)
    ok = [r for r in results if not r.fallback]
    fell = [r for r in results if r.fallback]
    assert ok and fell, (len(ok), len(fell))
    for r in fell:
        assert r.fallback_reason and r.fallback_reason.startswith("LLM error:") and server.base_url in r.fallback_reason
        assert sorted(r.order) == sorted(str(n) for n in range(len(FILMS)))
    stats = llm.stats
    assert stats["failures"] == len(fell) and stats["retries"] >= len(fell)
    print(f"\nkill mid-batch: {len(ok)} answered, {len(fell)} fell back in {drain_s:.1f} s; stats {stats}")
