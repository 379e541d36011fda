"""In-process PyTorch (``transformers``) client for label scoring, and the client that routes calls by kind.

On a CPU, PyTorch fp32 evaluates a prompt about twice as fast as llama.cpp on the same model (the bundled
SmolLM2-135M GGUF, which ``transformers`` reads and dequantises): see ``docs/benchmarks/llm-engines.md``. Scoring
calls (:meth:`label_logprobs`: the verbalizer and pointwise rankers) therefore run here. Generation with a JSON
schema (listwise ranking, profile extraction) needs a grammar: here ``xgrammar`` constrains ``generate``; llama.cpp
(when installed) generates faster, so ``llm.generation_engine=auto`` prefers it and this engine is what an install
without llama-cpp-python uses. :class:`RoutedClient` puts two engines behind the one
:class:`~knowrec.agent.llm.base.LLMClient` protocol.

Shared prefixes (the system text and the user's history, the same across the rankings of one request, the turns of
a session and pointwise's candidates) are evaluated once: the key/value state of the last few prompts is kept (an
LRU of ``prefix_cache`` entries, each about 46 kB per token for SmolLM2-135M) and a new prompt starts from the
longest common prefix it finds there.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from knowrec._hf import quiet_transformers
from knowrec.agent.llm.base import LLMClient, LLMReply, Message, adapter_name, parse_json_answer
from knowrec.errors import ConfigError, LLMError

__all__ = ["RoutedClient", "TorchClient", "generation_engine", "scoring_engine"]

log = logging.getLogger(__name__)

_MIN_REUSE = 8
"""A cached prefix shorter than this many tokens is not worth copying."""

_GGUF_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _gguf_read_once() -> Iterator[None]:
    """While loading one GGUF with ``transformers``: parse the file once, and build gguf's tensor name map once.

    ``transformers`` (5.x) reads a GGUF three times (tokenizer, config, weights), each time with a new
    ``gguf.GGUFReader`` that parses the 49k-token vocabulary again, and rebuilds ``gguf.get_tensor_name_map`` for
    every one of the model's ~400 modules: a first load of the bundled SmolLM2-135M took 36 s on 2 cores, 19 s with
    both memoised, the same weights (``docs/benchmarks/llm-load.md``). It imports both from the ``gguf`` module at
    call time, so they are swapped there for the duration of the load and put back after. The readers only read;
    the cache dies with the block.
    """
    try:
        import gguf
    except ImportError:  # pragma: no cover - depends on the install; the load itself then names the package
        yield
        return
    module: Any = gguf  # its attributes are swapped for callables of the same signature
    with _GGUF_PATCH_LOCK:
        reader_cls, name_map = module.GGUFReader, module.get_tensor_name_map
        readers: dict[tuple[str, str], Any] = {}

        def reader(path: Any, mode: Any = "r") -> Any:
            key = (os.path.abspath(os.fspath(path)), str(mode))
            if key not in readers:
                readers[key] = reader_cls(path, mode)
            return readers[key]

        module.GGUFReader = reader
        module.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
        try:
            yield
        finally:
            module.GGUFReader, module.get_tensor_name_map = reader_cls, name_map


def generation_engine(choice: str) -> str:
    """Resolve ``llm.generation_engine``: ``auto`` is ``llama_cpp`` when llama-cpp-python is installed (it generates
    faster on a CPU), else ``torch`` (which needs xgrammar for a schema)."""
    if choice != "auto":
        return choice
    import importlib.util

    return "llama_cpp" if importlib.util.find_spec("llama_cpp") is not None else "torch"


def scoring_engine(choice: str) -> str:
    """Resolve ``llm.scoring_engine``: ``auto`` is ``torch`` when torch, transformers, gguf and accelerate (which
    transformers needs to read a GGUF) are installed, else ``llama_cpp``."""
    if choice != "auto":
        return choice
    import importlib.util

    needed = ("torch", "transformers", "gguf", "accelerate")
    return "torch" if all(importlib.util.find_spec(m) is not None for m in needed) else "llama_cpp"


class TorchClient:
    """A GGUF (or Hugging Face folder) model run by PyTorch in fp32, last-position logits only.

    The model loads on first use (``transformers`` dequantises a GGUF; the result is cached as safetensors under
    ``cache_dir`` so later loads skip that). Calls are serialised by a lock. ``adapter`` is a PEFT LoRA folder,
    applied with ``peft`` and merged into the weights.

    Args:
        model_path: a ``.gguf`` file or a folder ``transformers`` can load.
        n_threads: torch threads (``None``: one per core, at most 8). Set once for the process at load.
        name: the model id recorded in results.
        prefix_cache: how many evaluated prompt states to keep for prefix reuse (0 turns reuse off).
        cache_size: memoised answers to identical requests.
        cache_dir: where the dequantised weights are kept (``None``: not kept).
        adapter: a PEFT LoRA folder to apply.
    """

    def __init__(
        self,
        model_path: Path,
        n_threads: int | None = None,
        name: str | None = None,
        prefix_cache: int = 4,
        cache_size: int = 512,
        cache_dir: Path | None = None,
        adapter: Path | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.n_threads = n_threads
        self.adapter = Path(adapter) if adapter else None
        base = name or self.model_path.stem
        self._name = f"{base}+{adapter_name(self.adapter)}" if self.adapter else base
        self.prefix_cache = prefix_cache
        self.cache_size = cache_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._lock = threading.RLock()
        self._model: Any = None
        self._tok: Any = None
        self._states: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._memo: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._grammars: OrderedDict[str, Any] = OrderedDict()
        self._grammar_compiler: Any = None
        self.last_prompt_tokens = 0
        self.last_reused_tokens = 0
        self.cache_hits = 0

    @property
    def model_id(self) -> str:
        return self._name

    # -- loading ------------------------------------------------------------------------------------------------------
    def verify(self) -> None:
        """Load the model; raises :class:`ConfigError` naming the file when it cannot be loaded."""
        self._load()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model, self._tok = self._read()
            return self._model

    def _read(self) -> tuple[Any, Any]:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError("the torch engine needs torch and transformers: pip install 'knowrec[local]'") from exc
        threads = self.n_threads or min(os.cpu_count() or 1, 8)
        torch.set_num_threads(threads)
        path = self.model_path
        if not path.exists():
            raise ConfigError(f"LLM model file not found: {path}")
        cached = self._dequantised_dir()
        try:
            with quiet_transformers():
                if cached is not None and (cached / "config.json").is_file():
                    tok = AutoTokenizer.from_pretrained(cached)
                    model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
                elif path.is_file():
                    try:
                        import gguf  # noqa: F401
                    except ImportError as exc:  # pragma: no cover - depends on the install
                        raise ConfigError("reading a GGUF with torch needs the gguf package: pip install gguf") from exc
                    with _gguf_read_once():
                        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
                        model = AutoModelForCausalLM.from_pretrained(
                            path.parent, gguf_file=path.name, dtype=torch.float32
                        )
                    if cached is not None:
                        self._save_dequantised(model, tok, cached)
                else:
                    tok = AutoTokenizer.from_pretrained(path)
                    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ConfigError(f"cannot load LLM model {path} with transformers: {exc}") from exc
        if self.adapter is not None:
            try:
                from peft import PeftModel
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ConfigError("a LoRA adapter needs peft: pip install peft") from exc
            if not (self.adapter / "adapter_config.json").is_file():
                raise ConfigError(f"LoRA adapter folder {self.adapter} has no adapter_config.json")
            try:
                # merged into the weights: inference costs what the base model costs
                model = PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise ConfigError(f"cannot apply the LoRA adapter {self.adapter}: {exc}") from exc
        if not tok.chat_template:
            raise ConfigError(f"{path} has no chat template")
        model.eval()
        return model, tok

    def _dequantised_dir(self) -> Path | None:
        if self.cache_dir is None or not self.model_path.is_file():
            return None
        st = self.model_path.stat()
        return self.cache_dir / f"{self.model_path.stem}-{st.st_size}-{int(st.st_mtime)}"

    @staticmethod
    def _save_dequantised(model: Any, tok: Any, folder: Path) -> None:
        import shutil

        from safetensors.torch import save_model

        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")  # processes loading at once never collide
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            # transformers refuses save_pretrained on a model read from a GGUF: the config (without the GGUF
            # quantisation note) and the fp32 weights (tied embeddings stored once) are written directly
            config = model.config.to_dict()
            config.pop("quantization_config", None)
            (tmp / "config.json").write_text(json.dumps(config, indent=1, default=str))
            save_model(model, str(tmp / "model.safetensors"))
            tok.save_pretrained(tmp)
            if (folder / "config.json").is_file():  # another process was first
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(folder, ignore_errors=True)  # a partial folder of an interrupted write
            tmp.replace(folder)
        except OSError as exc:  # a cache only: a full disk costs the next load time, nothing else
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("could not keep the dequantised model in %s: %s", folder, exc)

    # -- prompts ------------------------------------------------------------------------------------------------------
    def format_chat(self, messages: Sequence[Message], assistant_prefix: str = "") -> str:
        self._load()
        text = self._tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return str(text) + assistant_prefix

    def tokens(self, text: str) -> list[int]:
        """The prompt's token ids (special tokens in the text are parsed; no BOS added)."""
        self._load()
        with self._lock:  # a fast tokenizer used from two threads at once can fail ("Already borrowed")
            return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text))

    def label_token_ids(self, labels: Sequence[str]) -> dict[str, int]:
        """The single token id of each label; raises :class:`ConfigError` if a label is several tokens."""
        out: dict[str, int] = {}
        for label in labels:
            toks = self.tokens(label)
            if len(toks) != 1:
                raise ConfigError(
                    f"label {label!r} is {len(toks)} tokens for {self.model_id}; labels must be one token"
                )
            out[label] = toks[0]
        return out

    # -- scoring ------------------------------------------------------------------------------------------------------
    def label_logprobs(self, prompt: str, labels: Sequence[str]) -> dict[str, float]:
        key = json.dumps([prompt, list(labels)])
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                self.cache_hits += 1
                self.last_prompt_tokens = len(self.tokens(prompt))
                return dict(hit)
            ids = self.label_token_ids(labels)
            tokens = self.tokens(prompt)
            if not tokens:
                raise LLMError("empty prompt", retryable=False)
            started = time.perf_counter()
            try:
                logprobs = self._last_logprobs(tokens)
            except (RuntimeError, ValueError) as exc:
                self._states.clear()
                raise LLMError(f"torch evaluation failed: {exc}", retryable=False) from exc
            log.debug(
                "label_logprobs: %d prompt tokens (%d reused) in %.0f ms",
                len(tokens),
                self.last_reused_tokens,
                1000 * (time.perf_counter() - started),
            )
            result = {label: float(logprobs[tid]) for label, tid in ids.items()}
            if self.cache_size > 0:
                self._memo[key] = result
                while len(self._memo) > self.cache_size:
                    self._memo.popitem(last=False)
            return dict(result)

    def _last_logprobs(self, tokens: list[int]) -> Any:
        """Log-softmax of the next-token logits after ``tokens`` (float64), reusing a cached prefix state."""
        import torch

        model = self._load()
        self.last_prompt_tokens = len(tokens)
        common, state = self._longest_prefix(tokens)
        self.last_reused_tokens = common
        with torch.inference_mode():
            ids = torch.tensor([tokens[common:]], dtype=torch.long)
            # transformers 5.x names the key/value state `cache` (`past_key_values` before)
            kwargs = {self._cache_arg: state} if state is not None else {}
            out = model(input_ids=ids, use_cache=self.prefix_cache > 0, logits_to_keep=1, **kwargs)
        new_state = getattr(out, self._cache_arg, None)
        if self.prefix_cache > 0 and new_state is not None:
            self._states[tuple(tokens)] = new_state
            self._states.move_to_end(tuple(tokens))
            while len(self._states) > self.prefix_cache:
                self._states.popitem(last=False)
        return torch.log_softmax(out.logits[0, -1].double(), dim=-1).numpy()

    @cached_property
    def _cache_arg(self) -> str:
        """The forward() keyword for the key/value state (looked up once: this runs on every scoring call)."""
        import inspect

        model = self._load()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a peft adapter
        params = inspect.signature(base.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _longest_prefix(self, tokens: list[int]) -> tuple[int, Any]:
        """(length, a private copy of the state cut to it) of the longest cached prefix of ``tokens`` minus its last
        token (one token at least is evaluated, so that its logits exist); (0, None) when none is long enough."""
        best, best_key = 0, None
        limit = len(tokens) - 1
        for key in self._states:
            n = 0
            for a, b in zip(key, tokens[:limit], strict=False):
                if a != b:
                    break
                n += 1
            if n > best:
                best, best_key = n, key
        if best < _MIN_REUSE or best_key is None:
            return 0, None
        self._states.move_to_end(best_key)
        state = copy.deepcopy(self._states[best_key])
        drop = state.get_seq_length() - best
        if drop > 0:
            state.crop(-drop)  # transformers 5: a negative count removes that many tokens from the end
        return best, state

    # -- generation ---------------------------------------------------------------------------------------------------
    def chat(
        self, messages: Sequence[Message], schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> LLMReply:
        """Greedy generation; with a ``schema`` the output is constrained to it (xgrammar) and parsed."""
        import torch

        prompt = self.format_chat(messages)
        with self._lock:
            model = self._load()
            kwargs: dict[str, Any] = {}
            if schema is not None:
                kwargs["logits_processor"] = [self._grammar(schema)]
            ids = torch.tensor([self.tokens(prompt)], dtype=torch.long)
            started = time.perf_counter()
            try:
                with torch.inference_mode():
                    out = model.generate(
                        ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=max_tokens,
                        do_sample=False,
                        pad_token_id=self._tok.eos_token_id,
                        **kwargs,
                    )
            except Exception as exc:
                raise LLMError(f"torch generation failed: {exc}", retryable=False) from exc
            new = out[0, ids.shape[1] :]
            text = self._tok.decode(new, skip_special_tokens=True)
        latency = 1000 * (time.perf_counter() - started)
        usage = {"prompt_tokens": int(ids.shape[1]), "completion_tokens": len(new)}
        parsed = parse_json_answer(text, retryable=True) if schema is not None else None
        return LLMReply(text=text, parsed=parsed, usage=usage, latency_ms=latency, model=self.model_id)

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """A fresh xgrammar logits processor for ``schema`` (compiled grammars are kept, 32 at most)."""
        try:
            import xgrammar as xgr
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "JSON-constrained generation on the torch engine needs xgrammar (pip install 'knowrec[local-torch]'), "
                "or install llama-cpp-python and set llm.generation_engine = 'llama_cpp'"
            ) from exc
        key = json.dumps(schema, sort_keys=True)
        compiled = self._grammars.get(key)
        if compiled is None:
            if self._grammar_compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self._tok, vocab_size=self._model.config.vocab_size)
                self._grammar_compiler = xgr.GrammarCompiler(info)
            # the schema as given: properties are generated in its order (the prompt's), not the cache key's
            compiled = self._grammar_compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
            self._grammars[key] = compiled
            while len(self._grammars) > 32:
                self._grammars.popitem(last=False)
        self._grammars.move_to_end(key)
        return xgr.contrib.hf.LogitsProcessor(compiled)


class RoutedClient:
    """One :class:`LLMClient` over two engines: label scoring on ``scoring``, generation on ``generation``.

    Both must render the same prompts (the same model and chat template); :meth:`format_chat` uses the scoring
    engine's, since its prompts are the ones scored.
    """

    def __init__(self, scoring: LLMClient, generation: LLMClient) -> None:
        self.scoring = scoring
        self.generation = generation

    @property
    def model_id(self) -> str:
        return self.scoring.model_id

    @property
    def last_prompt_tokens(self) -> int:
        return int(getattr(self.scoring, "last_prompt_tokens", 0))

    def verify(self) -> None:
        for engine in (self.scoring, self.generation):
            check = getattr(engine, "verify", None)
            if check is not None:
                check()

    def format_chat(self, messages: Sequence[Message], assistant_prefix: str = "") -> str:
        return self.scoring.format_chat(messages, assistant_prefix)

    def count_tokens(self, text: str) -> int:
        counter = getattr(self.scoring, "count_tokens", None)
        return int(counter(text)) if callable(counter) else len(text) // 4 + 1

    def label_logprobs(self, prompt: str, labels: Sequence[str]) -> dict[str, float]:
        return self.scoring.label_logprobs(prompt, labels)

    def chat(
        self, messages: Sequence[Message], schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> LLMReply:
        return self.generation.chat(messages, schema, max_tokens)
