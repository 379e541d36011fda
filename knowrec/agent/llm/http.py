"""OpenAI-compatible HTTP client: vLLM (production), ``python -m llama_cpp.server`` (tests, CPU) or OpenAI itself.

Two layers:

* :class:`AsyncOpenAIHTTPClient` — the async core on ``httpx.AsyncClient``: retries with exponential backoff and
  jitter on retryable faults only (connection errors, timeouts, HTTP 429 and 5xx), a per-request timeout, an
  ``asyncio.Semaphore`` bounding the requests in flight, and a small ``stats`` dict.
* :class:`OpenAIHTTPClient` — our synchronous :class:`~knowrec.agent.llm.base.LLMClient`. It runs the async core on
  one private event-loop thread (``asyncio.run_coroutine_threadsafe``), so its methods are safe to call from many
  threads at once (the evaluation harness ranks users on a thread pool); the semaphore caps what reaches the server.

Structured output differs by server (the ``dialect``); the removed vLLM ``guided_*`` fields are never sent, because
vLLM ≥ 0.12 ignores them silently and answers unconstrained text::

    vllm, openai : "response_format": {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": {...}, "strict": true}}
    llama_cpp    : "response_format": {"type": "json_object", "schema": {...}}

Label scoring (:meth:`OpenAIHTTPClient.label_logprobs`) asks ``/completions`` for one token with the top-``k``
log-probabilities over a prompt rendered client-side with :meth:`~OpenAIHTTPClient.format_chat` (ChatML by default,
or a Jinja template file). Tokens that differ from a label only by surrounding whitespace (``" A"``, ``"A"``) are
the same answer: their probabilities are **summed** (log-sum-exp). A label absent from the top-``k`` gets ``-inf``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import random
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
from pydantic import SecretStr

from knowrec.agent.llm.base import LLMReply, Message, logsumexp, parse_json_answer
from knowrec.errors import ConfigError, LLMError

if TYPE_CHECKING:
    from knowrec.config import LLMConfig

__all__ = ["AsyncOpenAIHTTPClient", "Dialect", "HTTPOptions", "OpenAIHTTPClient", "render_chatml", "response_format"]

log = logging.getLogger(__name__)

Dialect = Literal["vllm", "llama_cpp", "openai"]
DIALECTS: tuple[str, ...] = ("vllm", "llama_cpp", "openai")

T = TypeVar("T")

_RETRYABLE_STATUS = frozenset({408, 429})


def render_chatml(messages: Sequence[Message], assistant_prefix: str = "") -> str:
    """The ChatML prompt (SmolLM2, Qwen2.5, …) ending inside the assistant's turn.

    Example:
        >>> render_chatml([{"role": "user", "content": "Hi"}])
        '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n" + assistant_prefix


def response_format(dialect: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` field that constrains a chat answer to ``schema`` on a ``dialect`` server.

    Example:
        >>> response_format("llama_cpp", {"type": "object"})
        {'type': 'json_object', 'schema': {'type': 'object'}}
    """
    if dialect == "llama_cpp":
        # llama.cpp's server rejects the json_schema form with HTTP 500; it takes the schema beside json_object
        return {"type": "json_object", "schema": schema}
    if dialect in ("vllm", "openai"):
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    raise ConfigError(f"unknown LLM dialect {dialect!r}; use one of {', '.join(DIALECTS)}")


def _label_key(token: str) -> str:
    return token.strip()


class _Retryable(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


@dataclass(frozen=True)
class HTTPOptions:
    """How the client talks to its server: the one list of the HTTP client's options.

    :meth:`from_config` reads the ``llm.*`` settings of the same names; both client classes take an ``options``
    object and/or any of these fields as keywords (``timeout_s=5``), which override it.

    Attributes:
        api_key: sent as ``Authorization: Bearer``.
        adapter: a LoRA adapter name; when set, requests name the adapter as their ``model``.
        dialect: how structured output is requested (see the module docstring).
        timeout_s: the limit for one request (one attempt).
        max_retries: extra attempts after a retryable fault.
        concurrency: requests in flight at most.
        max_logprobs: the server's limit on ``logprobs`` (vLLM ``--max-logprobs``, default 20).
        chat_template: ``chatml`` or a Jinja template file rendering label-scoring prompts client-side.
        backoff_s: the first retry waits about this long; each further one doubles it (plus jitter), up to
            ``backoff_max_s``.

    Example:
        >>> HTTPOptions(timeout_s=5).replace(max_retries=0).max_retries
        0
        >>> HTTPOptions().replace(timeout=5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        knowrec.errors.ConfigError: unknown HTTP client option 'timeout'; the options are api_key, adapter, ...
    """

    api_key: str | None = None
    adapter: str | None = None
    dialect: Dialect = "vllm"
    timeout_s: float = 60.0
    max_retries: int = 2
    concurrency: int = 8
    max_logprobs: int = 20
    chat_template: str = "chatml"
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ConfigError(f"unknown LLM dialect {self.dialect!r}; use one of {', '.join(DIALECTS)}")
        object.__setattr__(self, "max_retries", max(0, self.max_retries))
        object.__setattr__(self, "concurrency", max(1, self.concurrency))
        object.__setattr__(self, "max_logprobs", max(1, self.max_logprobs))

    @classmethod
    def from_config(cls, cfg: LLMConfig) -> HTTPOptions:
        """The options of the ``llm`` settings (every field of the same name)."""
        values = {f.name: getattr(cfg, f.name) for f in fields(cls) if f.name in type(cfg).model_fields}
        if isinstance(values.get("api_key"), SecretStr):
            values["api_key"] = values["api_key"].get_secret_value()
        return cls(**values)

    def replace(self, **changes: Any) -> HTTPOptions:
        """A copy with ``changes``; an unknown name is a :class:`~knowrec.errors.ConfigError`."""
        names = [f.name for f in fields(self)]
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise ConfigError(f"unknown HTTP client option {unknown[0]!r}; the options are {', '.join(names)}")
        return dataclasses.replace(self, **changes) if changes else self


class AsyncOpenAIHTTPClient:
    """Async core: one ``httpx.AsyncClient`` bound to the event loop that first uses it.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the base model name as served; ``None`` = the first base model ``GET /models`` lists.
        options: how to talk to the server (:class:`HTTPOptions`); keyword ``changes`` override its fields.
        transport: an ``httpx`` transport (tests use ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        options: HTTPOptions | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **changes: Any,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"LLM base_url must start with http:// or https:// (got {base_url!r})")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.options = (options or HTTPOptions()).replace(**changes)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._model_lock: asyncio.Lock | None = None
        self.stats: dict[str, int] = {"calls": 0, "retries": 0, "failures": 0}
        """``calls``: logical requests; ``retries``: extra attempts; ``failures``: requests that raised."""

    # -- plumbing ------------------------------------------------------------------------------------------------------
    @property
    def request_model(self) -> str | None:
        """The ``model`` field sent: the adapter when one is set, else the base model."""
        return self.options.adapter or self.model

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {"Authorization": f"Bearer {self.options.api_key}"} if self.options.api_key else {}
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.options.timeout_s, connect=min(self.options.timeout_s, 10.0)),
                headers=headers,
                transport=self._transport,
                limits=httpx.Limits(
                    max_connections=self.options.concurrency, max_keepalive_connections=self.options.concurrency
                ),
            )
            self._sem = asyncio.Semaphore(self.options.concurrency)
            self._model_lock = asyncio.Lock()
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.options.backoff_max_s, self.options.backoff_s * (2**attempt))
        delay += random.uniform(0, self.options.backoff_s)  # jitter: concurrent callers do not retry in lockstep
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.options.backoff_max_s))
        return delay

    async def _attempt(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        client = self._client()
        assert self._sem is not None
        async with self._sem:
            try:
                async with asyncio.timeout(self.options.timeout_s):
                    resp = await client.request(method, url, json=body)
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise _Retryable(f"timed out after {self.options.timeout_s:g} s") from exc
            except httpx.TransportError as exc:  # connect refused/reset, protocol errors
                raise _Retryable(f"{type(exc).__name__}: {exc or 'connection failed'}") from exc
        if resp.status_code >= 500 or resp.status_code in _RETRYABLE_STATUS:
            retry_after: float | None = None
            with contextlib.suppress(ValueError):
                retry_after = float(resp.headers.get("retry-after", ""))
            raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:200]}", retry_after)
        if resp.status_code >= 400:
            raise LLMError(
                f"LLM server refused {method} {url}: HTTP {resp.status_code}: {resp.text[:300]}", retryable=False
            )
        try:
            data = resp.json()
        except ValueError as exc:
            raise LLMError(f"LLM server sent a non-JSON body from {url}: {resp.text[:200]!r}") from exc
        if not isinstance(data, dict):
            raise LLMError(f"LLM server sent an unexpected body from {url}: {resp.text[:200]!r}")
        return data

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, root: str | None = None
    ) -> dict[str, Any]:
        """One logical request with retries on retryable faults; raises :class:`LLMError` when it gives up."""
        url = f"{root or self.base_url}{path}"
        self.stats["calls"] += 1
        attempt = 0
        while True:
            try:
                return await self._attempt(method, url, body)
            except _Retryable as exc:
                if attempt >= self.options.max_retries:
                    self.stats["failures"] += 1
                    raise LLMError(
                        f"LLM server at {self.base_url} failed {method} {path} after {attempt + 1} attempt(s): {exc}",
                        retryable=True,
                    ) from exc
                delay = self._backoff(attempt, exc.retry_after)
                log.info("retrying %s %s in %.2f s (%s)", method, url, delay, exc)
                attempt += 1
                self.stats["retries"] += 1
                await asyncio.sleep(delay)
            except LLMError:
                self.stats["failures"] += 1
                raise

    async def list_models(self) -> list[dict[str, Any]]:
        """``GET /models``: what the server serves (vLLM lists LoRA adapters with a ``parent``)."""
        data = await self._request("GET", "/models")
        models = data.get("data")
        return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []

    async def resolve_model(self) -> str | None:
        """The ``model`` to send, asking ``GET /models`` once for the base model when none was configured."""
        if self.request_model is not None:
            return self.request_model
        self._client()
        assert self._model_lock is not None
        async with self._model_lock:
            if self.model is None:
                models = await self.list_models()
                base = [m for m in models if not m.get("parent")] or models
                if not base:
                    raise LLMError(f"LLM server at {self.base_url} lists no models", retryable=False)
                self.model = str(base[0]["id"])
                log.info("LLM server at %s serves %s", self.base_url, self.model)
        return self.request_model

    # -- requests ------------------------------------------------------------------------------------------------------
    def chat_body(
        self, messages: Sequence[Message], schema: dict[str, Any] | None, max_tokens: int, model: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "temperature": 0.0,
            "max_tokens": max_tokens,
        }
        if model is not None:
            body["model"] = model
        if schema is not None:
            body["response_format"] = response_format(self.options.dialect, schema)
        return body

    def completion_body(self, prompt: str, model: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": 1,  # 0 means "unlimited" to llama.cpp
            "logprobs": min(20, self.options.max_logprobs),
            "temperature": 0.0,
        }
        if model is not None:
            body["model"] = model
        return body

    async def chat(
        self, messages: Sequence[Message], schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> LLMReply:
        """``POST /chat/completions``, greedy; with ``schema`` the answer is constrained and parsed."""
        model = await self.resolve_model()
        started = time.perf_counter()
        data = await self._request("POST", "/chat/completions", self.chat_body(messages, schema, max_tokens, model))
        latency = 1000 * (time.perf_counter() - started)
        try:
            text = data["choices"][0]["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMError(f"LLM answer has no choices[0].message: {json.dumps(data)[:200]}") from exc
        parsed = parse_json_answer(text, retryable=False) if schema is not None else None
        usage = {k: int(v) for k, v in (data.get("usage") or {}).items() if isinstance(v, int)}
        answered = str(data.get("model") or model or "")
        return LLMReply(text=text, parsed=parsed, usage=usage, latency_ms=latency, model=answered)

    async def completion_top_logprobs(self, prompt: str) -> tuple[dict[str, float], dict[str, Any]]:
        """``POST /completions`` for one token: the top-``k`` next tokens with log-probabilities, and the body."""
        model = await self.resolve_model()
        data = await self._request("POST", "/completions", self.completion_body(prompt, model))
        try:
            lp = data["choices"][0]["logprobs"]
            top = lp["top_logprobs"][0] if lp.get("top_logprobs") else {}
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMError(f"LLM answer has no logprobs: {json.dumps(data)[:200]}") from exc
        if isinstance(top, list):  # some servers send [{"token": .., "logprob": ..}, ...]
            top = {str(t.get("token")): t.get("logprob") for t in top if isinstance(t, dict)}
        if not isinstance(top, dict):
            raise LLMError(f"LLM answer has malformed top_logprobs: {json.dumps(data)[:200]}")
        out = {str(tok): float(v) for tok, v in top.items() if isinstance(v, int | float)}
        return out, data

    async def label_logprobs(self, prompt: str, labels: Sequence[str]) -> tuple[dict[str, float], dict[str, Any]]:
        top, data = await self.completion_top_logprobs(prompt)
        grouped: dict[str, list[float]] = {}
        for tok, value in top.items():
            grouped.setdefault(_label_key(tok), []).append(value)
        result = {lab: logsumexp(grouped[lab]) if lab in grouped else -math.inf for lab in labels}
        return result, data

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` by the served tokenizer (vLLM ``/tokenize``, llama.cpp ``/extras/tokenize``)."""
        root = self.base_url.removesuffix("/v1")
        if self.options.dialect == "llama_cpp":
            data = await self._request("POST", "/extras/tokenize", {"input": text}, root=root)
        elif self.options.dialect == "vllm":
            model = await self.resolve_model()
            body = {"prompt": text, "add_special_tokens": False, **({"model": model} if model else {})}
            data = await self._request("POST", "/tokenize", body, root=root)
        else:
            raise LLMError("the openai dialect has no tokenize endpoint", retryable=False)
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise LLMError(f"tokenize answer has no token list: {json.dumps(data)[:200]}")
        return [int(t) for t in tokens]


class _LoopThread:
    """A private asyncio event loop on a daemon thread; coroutines are submitted from any thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._thread is not None and threading.current_thread() is self._thread:
            coro.close()
            raise ConfigError("the sync LLM client was called from its own event loop; use AsyncOpenAIHTTPClient")
        return self.submit(coro).result()

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()


class OpenAIHTTPClient:
    """Our :class:`~knowrec.agent.llm.base.LLMClient` over an OpenAI-compatible server (vLLM, llama.cpp, OpenAI).

    Thread-safe: every call runs on one private event loop; at most ``concurrency`` requests are in flight.
    ``last_prompt_tokens`` and ``last_model`` are per calling thread (what *this* thread's last request used).

    Example:
        >>> llm = OpenAIHTTPClient("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct", adapter="movies")
        >>> llm.model_id
        'Qwen/Qwen2.5-7B-Instruct + lora:movies'
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        options: HTTPOptions | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **changes: Any,
    ) -> None:
        self.core = AsyncOpenAIHTTPClient(base_url, model, options, transport=transport, **changes)
        self.chat_template = self.core.options.chat_template
        self._template: Any = None
        if self.chat_template != "chatml":
            self._template = self._load_template(self.chat_template)
        self._loop = _LoopThread(f"knowrec-llm-http-{id(self):x}")
        self._local = threading.local()

    @classmethod
    def from_config(cls, cfg: LLMConfig, **changes: Any) -> OpenAIHTTPClient:
        """The client the ``llm`` settings describe (``base_url``, ``model`` and every :class:`HTTPOptions` field).

        Example:
            >>> from knowrec.config import LLMConfig
            >>> OpenAIHTTPClient.from_config(LLMConfig(backend="http", model="m", timeout_s=5)).core.options.timeout_s
            5.0
        """
        return cls(cfg.base_url, cfg.model, HTTPOptions.from_config(cfg), **changes)

    @staticmethod
    def _load_template(path_text: str) -> Any:
        path = Path(path_text).expanduser()
        if not path.is_file():
            raise ConfigError(f"llm.chat_template must be 'chatml' or a Jinja template file; not found: {path}")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ConfigError(f"chat template {path}: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(path.read_text(encoding="utf-8"))
        except Exception as exc:
            raise ConfigError(f"chat template {path} does not parse: {exc}") from exc

    # -- identity ------------------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.core.base_url

    @property
    def dialect(self) -> str:
        return self.core.options.dialect

    @property
    def stats(self) -> dict[str, int]:
        """``calls``, ``retries`` and ``failures`` so far (a copy)."""
        return dict(self.core.stats)

    @property
    def model_id(self) -> str:
        """Base model and adapter, e.g. ``smollm2 + lora:my-adapter``; never touches the network."""
        base = self.core.model or f"auto@{self.core.base_url}"
        adapter = self.core.options.adapter
        return f"{base} + lora:{adapter}" if adapter else base

    @property
    def last_prompt_tokens(self) -> int:
        """Prompt tokens of this thread's last request (from the server's ``usage``)."""
        return int(getattr(self._local, "prompt_tokens", 0))

    @property
    def last_model(self) -> str:
        """The ``model`` the server answered this thread's last request with (names the adapter that answered)."""
        return str(getattr(self._local, "model", ""))

    def _note(self, data_or_reply: Any, usage: dict[str, Any] | None = None) -> None:
        if isinstance(data_or_reply, LLMReply):
            self._local.model = data_or_reply.model
            self._local.prompt_tokens = int(data_or_reply.usage.get("prompt_tokens", 0))
        else:
            self._local.model = str(data_or_reply.get("model") or self.core.request_model or "")
            tokens = (data_or_reply.get("usage") or {}).get("prompt_tokens", 0)
            self._local.prompt_tokens = int(tokens) if isinstance(tokens, int) else 0

    # -- LLMClient -----------------------------------------------------------------------------------------------------
    def chat(
        self, messages: Sequence[Message], schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> LLMReply:
        reply = self._loop.run(self.core.chat(messages, schema, max_tokens))
        self._note(reply)
        return reply

    def format_chat(self, messages: Sequence[Message], assistant_prefix: str = "") -> str:
        if self._template is None:
            return render_chatml(messages, assistant_prefix)
        text = self._template.render(messages=list(messages), add_generation_prompt=True, bos_token="", eos_token="")
        return str(text) + assistant_prefix

    def label_logprobs(self, prompt: str, labels: Sequence[str]) -> dict[str, float]:
        """Log-probability of each label as the next token, from the server's top-``k`` (k ≤ 20).

        Whitespace variants of a label (``" A"``, ``"A"``) are summed (log-sum-exp); labels outside the top-``k``
        get ``-inf``.
        """
        result, data = self._loop.run(self.core.label_logprobs(prompt, labels))
        self._note(data)
        return result

    def top_logprobs(self, prompt: str) -> dict[str, float]:
        """The raw top-``k`` next tokens (as the server decodes them) with their log-probabilities."""
        top, data = self._loop.run(self.core.completion_top_logprobs(prompt))
        self._note(data)
        return top

    def tokenize(self, text: str) -> list[int]:
        """Token ids by the served tokenizer (dialects ``vllm`` and ``llama_cpp``)."""
        return self._loop.run(self.core.tokenize(text))

    def check_labels(self, labels: Sequence[str]) -> None:
        """Raises :class:`ConfigError` when a label is not exactly one token of the served model."""
        for label in labels:
            n = len(self.tokenize(label))
            if n != 1:
                raise ConfigError(f"label {label!r} is {n} tokens for {self.model_id}; labels must be one token")

    def list_models(self) -> list[dict[str, Any]]:
        return self._loop.run(self.core.list_models())

    def verify(self) -> None:
        """``GET /models``: raises :class:`LLMError` naming the URL when the server cannot be reached, and
        :class:`ConfigError` when it does not serve the configured model or adapter."""
        url = f"{self.core.base_url}/models"
        try:
            models = self.list_models()
        except LLMError as exc:
            what = "unreachable" if exc.retryable else "refused the check"
            raise LLMError(f"LLM server {what} at {url}: {exc}", retryable=exc.retryable) from exc
        served = [str(m.get("id")) for m in models]
        want = self.core.request_model
        # llama.cpp's server answers whatever model name is asked for; vLLM and OpenAI do not
        if want is not None and want not in served and self.core.options.dialect != "llama_cpp":
            raise ConfigError(
                f"LLM server at {self.core.base_url} does not serve {want!r}; it serves: {', '.join(served) or '-'}"
            )
        if want is None:
            self._loop.run(self.core.resolve_model())

    def close(self) -> None:
        """Close the connection pool and stop the private event loop (a later call starts them again)."""
        if self.core._http is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already gone
                self._loop.run(self.core.aclose())
        self._loop.stop()

    def __enter__(self) -> OpenAIHTTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
