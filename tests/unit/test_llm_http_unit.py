"""OpenAIHTTPClient without a model: request bodies per dialect (httpx MockTransport), LoRA naming, label mapping,
retries/timeouts/fallbacks (MockTransport and a tiny stdlib HTTP server), thread safety, settings and wiring."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from knowrec import Recommender, Settings
from knowrec.agent.llm.base import LLMClient
from knowrec.agent.llm.http import HTTPOptions, OpenAIHTTPClient, render_chatml, response_format
from knowrec.agent.rank import ListwiseRanker, RankContext, RankItem, VerbalizerRanker
from knowrec.errors import ConfigError, LLMError
from knowrec.types import Candidate

SCHEMA = {
    "type": "object",
    "properties": {"ranking": {"type": "array", "items": {"type": "string", "enum": ["A", "B", "C"]}}},
    "required": ["ranking"],
}
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Rank A, B, C."}]


def chat_answer(content: str, model: str = "served-model") -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22},
    }


def completion_answer(top: dict[str, float], model: str = "served-model") -> dict[str, Any]:
    first = max(top, key=lambda t: top[t])
    return {
        "object": "text_completion",
        "model": model,
        "choices": [
            {
                "text": first,
                "index": 0,
                "logprobs": {"tokens": [first], "token_logprobs": [top[first]], "top_logprobs": [top]},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 31, "completion_tokens": 1, "total_tokens": 32},
    }


class Recorder:
    """A MockTransport handler that records request bodies and answers like an OpenAI-compatible server."""

    def __init__(self, content: str = '{"ranking": ["B", "A"]}', top: dict[str, float] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []
        self.content = content
        self.top = top or {"A": -0.5, " B": -1.5, "B": -2.5, "The": -3.0}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content) if request.content else {}
        self.bodies.append(body)
        model = body.get("model", "served-model")
        if request.url.path.endswith("/models"):
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": [
                        {"id": "my-adapter", "object": "model", "parent": "base-model"},
                        {"id": "base-model", "object": "model", "parent": None},
                    ],
                },
            )
        if request.url.path.endswith("/chat/completions"):
            return httpx.Response(200, json=chat_answer(self.content, model))
        if request.url.path.endswith("/completions"):
            return httpx.Response(200, json=completion_answer(self.top, model))
        return httpx.Response(404, json={"error": "no such route"})


def client(handler: Callable[..., Any], **kw: Any) -> OpenAIHTTPClient:
    kw.setdefault("model", "base-model")
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return OpenAIHTTPClient("http://llm.test/v1", transport=httpx.MockTransport(handler), **kw)


def guided_keys(obj: Any, path: str = "") -> list[str]:
    """Every key starting with ``guided_`` anywhere in a JSON value."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if str(k).startswith("guided_"):
                found.append(f"{path}.{k}")
            found += guided_keys(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for n, v in enumerate(obj):
            found += guided_keys(v, f"{path}[{n}]")
    return found


# -- request bodies per dialect --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", ["vllm", "llama_cpp", "openai"])
def test_dialect_request_bodies_and_no_guided_fields(dialect: str):
    rec = Recorder()
    with client(rec, dialect=dialect) as llm:
        assert isinstance(llm, LLMClient)
        reply = llm.chat(MSGS, schema=SCHEMA, max_tokens=30)
        llm.chat(MSGS, max_tokens=5)
        llm.label_logprobs(llm.format_chat(MSGS), ["A", "B"])
    chat, plain, comp = rec.bodies
    assert reply.parsed == {"ranking": ["B", "A"]}
    assert chat["temperature"] == 0 and chat["max_tokens"] == 30 and chat["messages"] == MSGS
    assert chat["model"] == "base-model"
    if dialect == "llama_cpp":
        assert chat["response_format"] == {"type": "json_object", "schema": SCHEMA}
    else:
        assert chat["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
        }
    assert "response_format" not in plain
    assert comp == {
        "model": "base-model",
        "prompt": llm.format_chat(MSGS),
        "max_tokens": 1,
        "logprobs": 20,
        "temperature": 0.0,
    }
    assert [r.url.path for r in rec.requests] == ["/v1/chat/completions", "/v1/chat/completions", "/v1/completions"]
    for body in rec.bodies:
        assert guided_keys(body) == [], f"{dialect} sent {guided_keys(body)}"
        assert "extra_body" not in body


def test_unknown_dialect_is_a_config_error():
    with pytest.raises(ConfigError, match="dialect"):
        response_format("tgi", SCHEMA)
    with pytest.raises(ConfigError, match="dialect"):
        OpenAIHTTPClient("http://x/v1", "m", dialect="tgi")  # type: ignore[arg-type]


def test_logprobs_k_follows_max_logprobs():
    rec = Recorder()
    with client(rec, max_logprobs=5) as llm:
        llm.label_logprobs("p", ["A"])
    with client(rec, max_logprobs=64) as llm:
        llm.label_logprobs("p", ["A"])
    assert [b["logprobs"] for b in rec.bodies] == [5, 20]


def test_api_key_is_sent_as_bearer():
    rec = Recorder()
    with client(rec, api_key="s3cret") as llm:
        llm.chat(MSGS)
    assert rec.requests[0].headers["authorization"] == "Bearer s3cret"


# -- LoRA adapters and model naming ------------------------------------------------------------------------------------
def test_adapter_is_the_request_model_and_is_recorded():
    rec = Recorder()
    with client(rec, adapter="my-adapter") as llm:
        assert llm.model_id == "base-model + lora:my-adapter"
        reply = llm.chat(MSGS, schema=SCHEMA)
        assert reply.model == "my-adapter" and llm.last_model == "my-adapter"
        llm.label_logprobs("p", ["A"])
        assert llm.last_model == "my-adapter" and llm.last_prompt_tokens == 31
    assert all(b["model"] == "my-adapter" for b in rec.bodies)
    res = ListwiseRanker(llm, llm_weight=1.0).rank(RankContext(("Heat",)), rank_items(3), 2)
    assert not res.fallback and res.model == "my-adapter"


def test_unset_model_is_resolved_from_models_endpoint():
    rec = Recorder()
    with client(rec, model=None) as llm:
        assert llm.model_id == "auto@http://llm.test/v1"  # no network for the name
        llm.chat(MSGS)
        assert llm.model_id == "base-model"  # the entry without a parent, not the adapter
    assert rec.requests[0].url.path == "/v1/models" and rec.bodies[1]["model"] == "base-model"


def test_verify_checks_the_served_model_names():
    with client(Recorder(), model="base-model") as llm:
        llm.verify()
    with client(Recorder(), adapter="my-adapter") as llm:
        llm.verify()
    with client(Recorder(), adapter="other") as llm, pytest.raises(ConfigError, match="does not serve 'other'"):
        llm.verify()
    with client(Recorder(), model="other", dialect="llama_cpp") as llm:
        llm.verify()  # llama.cpp answers whatever name is asked for


# -- label mapping -----------------------------------------------------------------------------------------------------
def test_label_logprobs_merge_whitespace_variants_with_logsumexp():
    rec = Recorder(top={"A": -0.5, " B": -1.5, "B": -2.5, "\nC": -4.0, "The": -3.0})
    with client(rec) as llm:
        out = llm.label_logprobs("prompt", ["A", "B", "C", "D"])
    assert out["A"] == pytest.approx(-0.5)
    assert out["B"] == pytest.approx(math.log(math.exp(-1.5) + math.exp(-2.5)))
    assert out["C"] == pytest.approx(-4.0)
    assert out["D"] == -math.inf


def test_verbalizer_over_http_scores_labels_and_reports_prompt_tokens():
    rec = Recorder(top={"C": -0.2, "A": -1.0, "B": -3.0})
    with client(rec) as llm:
        res = VerbalizerRanker(llm, llm_weight=1.0).rank(RankContext(("Heat",)), rank_items(3), 3)
    assert not res.fallback and res.order == ["2", "0", "1"]
    assert res.usage["prompt_tokens"] == 31 and res.model == "base-model"


# -- chat templates ----------------------------------------------------------------------------------------------------
def test_chatml_and_template_file(tmp_path: Path):
    assert render_chatml(MSGS, "{") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nRank A, B, C.<|im_end|>\n<|im_start|>assistant\n{"
    )
    tpl = tmp_path / "llama3.jinja"
    tpl.write_text(
        "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
        "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    )
    llm = OpenAIHTTPClient("http://x/v1", "m", chat_template=str(tpl))
    assert llm.format_chat(MSGS[1:]) == (
        "<|start_header_id|>user<|end_header_id|>\n\nRank A, B, C.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    with pytest.raises(ConfigError, match="not found"):
        OpenAIHTTPClient("http://x/v1", "m", chat_template=str(tmp_path / "missing.jinja"))


# -- faults via MockTransport ------------------------------------------------------------------------------------------
class Scripted:
    """Answers with a scripted list of (status, body) in order, then 200s."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            status, headers = (step, {}) if isinstance(step, int) else step
            return httpx.Response(status, json={"error": f"scripted {status}"}, headers=headers)
        return httpx.Response(200, json=chat_answer('{"ranking": ["A"]}'))


@pytest.mark.parametrize(
    "fault", [500, 502, 503, 429, (429, {"retry-after": "0.01"}), httpx.ConnectError("refused"), httpx.ReadTimeout("t")]
)
def test_retryable_faults_are_retried(fault: Any):
    h = Scripted([fault])
    with client(h, max_retries=2) as llm:
        assert llm.chat(MSGS, schema=SCHEMA).parsed == {"ranking": ["A"]}
        assert h.calls == 2 and llm.stats == {"calls": 1, "retries": 1, "failures": 0}


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_are_not_retried(status: int):
    h = Scripted([status])
    with client(h, max_retries=3) as llm:
        with pytest.raises(LLMError, match=f"HTTP {status}") as err:
            llm.chat(MSGS)
        assert not err.value.retryable
        assert h.calls == 1 and llm.stats == {"calls": 1, "retries": 0, "failures": 1}


def test_retries_give_up_with_a_retryable_error():
    h = Scripted([500, 500, 500, 500])
    with client(h, max_retries=2) as llm:
        with pytest.raises(LLMError, match="after 3 attempt") as err:
            llm.chat(MSGS)
        assert err.value.retryable and h.calls == 3
        assert llm.stats == {"calls": 1, "retries": 2, "failures": 1}


def test_per_request_timeout_is_enforced():
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=chat_answer("{}"))

    with client(slow, timeout_s=0.2, max_retries=1) as llm:
        started = time.monotonic()
        with pytest.raises(LLMError, match="timed out") as err:
            llm.chat(MSGS)
        assert time.monotonic() - started < 2.0 and err.value.retryable
        assert llm.stats["retries"] == 1


def test_invalid_json_answer_is_a_non_retryable_error_and_a_flagged_fallback():
    rec = Recorder(content='{"ranking": ["A", ')
    with client(rec) as llm:
        with pytest.raises(LLMError, match="not valid JSON") as err:
            llm.chat(MSGS, schema=SCHEMA)
        assert not err.value.retryable
        res = ListwiseRanker(llm).rank(RankContext(("Heat",)), rank_items(3), 2)
    assert res.fallback and "not valid JSON" in (res.fallback_reason or "")
    assert res.order == ["0", "1", "2"]


def test_many_threads_share_one_client_with_bounded_concurrency():
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        with lock:
            in_flight -= 1
        prompt = json.loads(request.content)["prompt"]
        n = int(prompt.split()[-1])
        return httpx.Response(200, json=completion_answer({"A": -float(n % 5) - 0.1, "B": -9.0}))

    with client(handler, concurrency=3) as llm:

        def one(n: int) -> tuple[int, float, int]:
            out = llm.label_logprobs(f"prompt {n}", ["A", "B"])
            return n, out["A"], llm.last_prompt_tokens

        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(one, range(40)))
        assert llm.stats["calls"] == 40
    assert all(a == pytest.approx(-float(n % 5) - 0.1) and t == 31 for n, a, t in results)
    assert 1 <= peak <= 3


def test_verify_names_the_url_when_unreachable():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = OpenAIHTTPClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(LLMError) as err:
        llm.verify()
    msg = str(err.value)
    assert f"http://127.0.0.1:{port}/v1/models" in msg and "unreachable" in msg and "\n" not in msg
    assert err.value.retryable
    llm.close()


# -- a tiny real HTTP server (stdlib) for fault shapes -----------------------------------------------------------------
class _Fake(BaseHTTPRequestHandler):
    script: ClassVar[list[tuple[int, Any]]] = []
    hits: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        type(self).hits.append(self.path)
        status, payload = type(self).script.pop(0) if type(self).script else (200, chat_answer('{"ranking": ["B"]}'))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[tuple[str, type[_Fake]]]:
    handler = type("Handler", (_Fake,), {"script": [], "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


def real_client(url: str, **kw: Any) -> OpenAIHTTPClient:
    return OpenAIHTTPClient(url, "m", backoff_s=0.01, backoff_max_s=0.05, timeout_s=5, **kw)


def test_fake_server_500_then_200_is_retried(fake_server: tuple[str, type[_Fake]]):
    url, handler = fake_server
    handler.script = [(500, {"error": "boom"})]
    with real_client(url, max_retries=2) as llm:
        res = ListwiseRanker(llm, llm_weight=1.0).rank(RankContext(("Heat",)), rank_items(3), 2)
        assert not res.fallback and res.order[0] == "1"
        assert llm.stats == {"calls": 1, "retries": 1, "failures": 0}
    assert handler.hits == ["/v1/chat/completions"] * 2


def test_fake_server_400_is_not_retried(fake_server: tuple[str, type[_Fake]]):
    url, handler = fake_server
    handler.script = [(400, {"error": "bad request"})]
    with real_client(url, max_retries=3) as llm:
        res = ListwiseRanker(llm).rank(RankContext(("Heat",)), rank_items(3), 2)
        assert llm.stats == {"calls": 1, "retries": 0, "failures": 1}
    assert res.fallback and "HTTP 400" in (res.fallback_reason or "")
    assert len(handler.hits) == 1


def test_fake_server_invalid_json_content_is_a_flagged_fallback(fake_server: tuple[str, type[_Fake]]):
    url, handler = fake_server
    handler.script = [(200, chat_answer("ranking: B, A"))]
    with real_client(url, max_retries=3) as llm:
        res = ListwiseRanker(llm).rank(RankContext(("Heat",)), rank_items(3), 2)
        assert llm.stats["retries"] == 0
    assert res.fallback and "not valid JSON" in (res.fallback_reason or "") and res.order == ["0", "1", "2"]


# -- settings and wiring -----------------------------------------------------------------------------------------------
def test_env_names_build_the_http_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # the names docker-compose.yml uses, plus model/adapter/key
    monkeypatch.setenv("KNOWREC_LLM__BACKEND", "http")
    monkeypatch.setenv("KNOWREC_LLM__BASE_URL", "http://vllm:8000/v1/")
    monkeypatch.setenv("KNOWREC_LLM__DIALECT", "vllm")
    monkeypatch.setenv("KNOWREC_LLM__MODEL", "Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setenv("KNOWREC_LLM__ADAPTER", "movies")
    monkeypatch.setenv("KNOWREC_LLM__API_KEY", "k")
    monkeypatch.setenv("KNOWREC_LLM__CONCURRENCY", "4")
    monkeypatch.setenv("KNOWREC_CONFIG", str(tmp_path / "none.toml"))
    s = Settings(data_dir=tmp_path)
    assert s.llm.backend == "http" and s.llm.base_url == "http://vllm:8000/v1" and s.llm.dialect == "vllm"
    assert s.llm.api_key is not None and s.llm.api_key.get_secret_value() == "k"
    assert "k" not in repr(s.llm.api_key)
    llm = Recommender(s).llm
    assert isinstance(llm, OpenAIHTTPClient)
    assert llm.model_id == "Qwen/Qwen2.5-7B-Instruct + lora:movies"
    assert llm.core.request_model == "movies" and llm.core.options.concurrency == 4 and llm.core.options.api_key == "k"
    # every option of the client comes from the setting of the same name (one list: HTTPOptions)
    assert llm.core.options == HTTPOptions(api_key="k", adapter="movies", dialect="vllm", concurrency=4)


def test_http_settings_are_validated(tmp_path: Path):
    with pytest.raises(ValueError, match="base_url"):
        Settings(data_dir=tmp_path, llm={"backend": "http", "base_url": "vllm:8000"})
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, llm={"backend": "http", "dialect": "tgi"})
    s = Settings(data_dir=tmp_path, llm={"backend": "http", "adapter": ""})
    assert s.llm.adapter is None and s.llm.model is None


def rank_items(n: int) -> list[RankItem]:
    return [RankItem(candidate=Candidate(item_id=str(i), score=1.0 - i / 10), title=f"Movie {i}") for i in range(n)]
