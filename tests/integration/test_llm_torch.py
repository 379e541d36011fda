"""The torch engine on the bundled SmolLM2 GGUF: it agrees with llama.cpp, prefix reuse changes nothing, and it
generates under a JSON schema (xgrammar)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knowrec import Recommender, Settings
from knowrec.agent.llm.llama_cpp import LlamaCppClient, bundled_llm_path
from knowrec.agent.llm.torch_engine import RoutedClient, TorchClient
from knowrec.agent.rank import LABELS, ListwiseRanker, RankContext, RankItem, VerbalizerRanker
from knowrec.errors import ConfigError, LLMError
from knowrec.types import Candidate, Fact

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOLERANCE = 0.35
"""Largest allowed gap between the engines' label log-probabilities: llama.cpp computes in its own kernels (with
quantised activations for the matrix products), torch in fp32 on the dequantised weights. Measured on 40 ranking
prompts of the demo (docs/benchmarks/llm-engines.md): largest gap 0.30, median per-prompt largest gap 0.20, the
same top label on all 40."""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm-cache")


GGUF_PARSES: list[str] = []
"""The GGUF files parsed while the module's torch client loaded (from the GGUF: its cache folder starts empty)."""


@pytest.fixture(scope="module")
def torch_llm(cache_dir: Path) -> Iterator[TorchClient]:
    import gguf

    reader_cls = gguf.GGUFReader

    class CountingReader(reader_cls):  # type: ignore[misc,valid-type]
        def __init__(self, path: Any, *args: Any, **kwargs: Any) -> None:
            GGUF_PARSES.append(str(path))
            super().__init__(path, *args, **kwargs)

    gguf.GGUFReader = CountingReader
    try:
        llm = TorchClient(bundled_llm_path(), n_threads=2, cache_dir=cache_dir)
        llm.verify()
        restored = gguf.GGUFReader is CountingReader
    finally:
        gguf.GGUFReader = reader_cls
    assert restored, "the load left its memoising GGUF reader in the gguf module"
    # the load hides transformers' own progress bars, and shows them again after
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    yield llm


def test_the_gguf_is_parsed_once_when_torch_reads_it(torch_llm: TorchClient):
    # transformers reads it for the tokenizer, the config and the weights: one parse serves the three
    # (docs/benchmarks/llm-load.md)
    parsed = list(GGUF_PARSES)
    assert parsed == [str(bundled_llm_path())]


@pytest.fixture(scope="module")
def cpp_llm() -> LlamaCppClient:
    return LlamaCppClient(bundled_llm_path(), n_ctx=4096, n_threads=2)


def ranking_prompt(llm: TorchClient | LlamaCppClient, history: list[str], titles: list[str]) -> str:
    items = [
        RankItem(
            Candidate(item_id=str(n), score=1.0),
            t,
            (Fact(head=str(n), relation="genre", tail=f"genre:G{n % 4}", tail_label=f"Genre {n % 4}"),),
        )
        for n, t in enumerate(titles)
    ]
    ranker = VerbalizerRanker(llm, prompt_tokens=None)
    _, prompt = ranker._fit_prompt(RankContext(history_titles=tuple(history)), items)
    return prompt


HISTORY = ["Heat (1995)", "Ronin (1998)", "Casino (1995)", "Goodfellas (1990)", "The Godfather (1972)"]
TITLES = [
    "Toy Story (1995)",
    "Scarface (1983)",
    "Babe (1995)",
    "The Departed (2006)",
    "Mary Poppins (1964)",
    "Reservoir Dogs (1992)",
    "Finding Nemo (2003)",
    "Donnie Brasco (1997)",
]


def test_the_engines_render_the_same_prompt_and_agree_on_label_logprobs(torch_llm: TorchClient, cpp_llm):
    prompt = ranking_prompt(torch_llm, HISTORY, TITLES)
    assert prompt == ranking_prompt(cpp_llm, HISTORY, TITLES)
    assert torch_llm.tokens(prompt) == cpp_llm._tokens(prompt)
    labels = list(LABELS[: len(TITLES)])
    a = torch_llm.label_logprobs(prompt, labels)
    b = cpp_llm.label_logprobs(prompt, labels)
    assert max(abs(a[lab] - b[lab]) for lab in labels) < TOLERANCE
    assert max(labels, key=a.__getitem__) == max(labels, key=b.__getitem__)
    assert sum(math.exp(v) for v in a.values()) < 1.0


def test_prefix_reuse_gives_the_same_numbers_as_a_fresh_evaluation(torch_llm: TorchClient, cache_dir: Path):
    labels = list(LABELS[:4])
    first = ranking_prompt(torch_llm, HISTORY, TITLES[:4])
    second = ranking_prompt(torch_llm, HISTORY, TITLES[4:])  # same system text and history, other candidates
    torch_llm.label_logprobs(first, labels)
    reused = torch_llm.label_logprobs(second, labels)
    assert torch_llm.last_reused_tokens > 0.5 * torch_llm.last_prompt_tokens
    # the second client loads the dequantised weights the first one kept (not the GGUF)
    kept = [p for p in cache_dir.iterdir() if (p / "model.safetensors").is_file()]
    assert len(kept) == 1 and (kept[0] / "config.json").is_file()
    fresh_llm = TorchClient(bundled_llm_path(), n_threads=2, prefix_cache=0, cache_dir=cache_dir)
    fresh = fresh_llm.label_logprobs(second, labels)
    assert fresh_llm.last_reused_tokens == 0
    assert reused == pytest.approx(fresh, abs=1e-4)
    # the cached state itself is never modified by a reuse: the first prompt still gives its own answer
    torch_llm._memo.clear()
    again = torch_llm.label_logprobs(first, labels)
    assert again == pytest.approx(fresh_llm.label_logprobs(first, labels), abs=1e-4)


def test_torch_generates_under_a_json_schema(torch_llm: TorchClient):
    schema = {"type": "object", "properties": {"pick": {"type": "string", "enum": ["A", "B"]}}, "required": ["pick"]}
    reply = torch_llm.chat([{"role": "user", "content": "A or B? Answer in JSON."}], schema=schema, max_tokens=20)
    assert reply.parsed == {"pick": reply.parsed["pick"]} and reply.parsed["pick"] in ("A", "B")
    # the listwise ranker's own schema: a full answer, labels from the enum only, no fallback
    items = [
        RankItem(Candidate(item_id=str(n), score=1.0), t, (Fact(head=str(n), relation="genre", tail="genre:Crime"),))
        for n, t in enumerate(TITLES[:6])
    ]
    result = ListwiseRanker(torch_llm, prompt_tokens=None).rank(RankContext(history_titles=tuple(HISTORY)), items, 3)
    assert not result.fallback, result.fallback_reason
    assert sorted(result.order) == sorted(it.candidate.item_id for it in items)
    with pytest.raises(LLMError, match="not valid JSON"):  # cut short by max_tokens: a clear error, not a crash
        torch_llm.chat([{"role": "user", "content": "Describe Heat in JSON."}], schema={"type": "object"}, max_tokens=2)


def test_routing_sends_generation_and_scoring_to_their_engines(torch_llm: TorchClient, cpp_llm: LlamaCppClient):
    routed = RoutedClient(torch_llm, cpp_llm)
    schema = {"type": "object", "properties": {"pick": {"type": "string", "enum": ["A", "B"]}}, "required": ["pick"]}
    before = len(cpp_llm._memo)
    reply = routed.chat([{"role": "user", "content": "A or B? Reply in JSON."}], schema=schema, max_tokens=20)
    assert reply.parsed["pick"] in ("A", "B") and len(cpp_llm._memo) == before + 1
    calls = torch_llm.cache_hits, len(torch_llm._memo)
    routed.label_logprobs(routed.format_chat([{"role": "user", "content": "A or B?"}]), ["A", "B"])
    assert (torch_llm.cache_hits, len(torch_llm._memo)) != calls


def test_the_in_process_engines_follow_the_settings(tmp_path: Path):
    rec = Recommender(Settings(data_dir=tmp_path, progress=False))  # llama-cpp-python is installed here
    assert isinstance(rec.llm, RoutedClient) and isinstance(rec.llm.scoring, TorchClient)
    assert isinstance(rec.llm.generation, LlamaCppClient)
    rec.close()
    other = Recommender(Settings(data_dir=tmp_path, progress=False, llm={"scoring_engine": "llama_cpp"}))
    assert isinstance(other.llm, LlamaCppClient)
    other.close()
    only_torch = Recommender(Settings(data_dir=tmp_path, progress=False, llm={"generation_engine": "torch"}))
    assert isinstance(only_torch.llm, TorchClient)  # an install without llama-cpp-python: nothing of it loads
    only_torch.close()


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        TorchClient(tmp_path / "nope.gguf").verify()
