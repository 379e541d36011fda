"""The HTTP API against a hand-written fake recommender: routing, auth, limits, error mapping, OpenAI shapes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from knowrec.api import RecommenderAPI
from knowrec.config import Settings
from knowrec.errors import LLMError, NotFound, StoreUnavailable
from knowrec.server import create_app
from knowrec.types import (
    ChatProgress,
    ChatTurn,
    Fact,
    Item,
    ItemDetails,
    Reason,
    Recommendation,
    RecommendedItem,
    SessionProfile,
)

FACT = Fact(head="m1", relation="director", tail="p:d1", head_label="Alpha", tail_label="Dir One")
ITEMS = {"m1": Item(id="m1", title="Alpha"), "m2": Item(id="m2", title="Beta")}


def _rec(user_id: str | None, ids: list[str]) -> Recommendation:
    items = tuple(
        RecommendedItem(
            item_id=i,
            title=ITEMS[i].title,
            rank=n + 1,
            score=1.0 / (n + 1),
            retrieval_score=1.0,
            reasons=(Reason(text="Directed by Dir One.", fact_ids=(FACT.id,)),),
            facts=(FACT,),
        )
        for n, i in enumerate(ids)
    )
    return Recommendation(user_id=user_id, items=items, ranking_mode="none", model="none")


class FakeRecommender:
    """A hand-written :class:`~knowrec.api.RecommenderAPI`: the server reaches it only through the protocol."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fail: Exception | None = None
        self.verify_error: Exception | None = None
        self.sessions: dict[str, list[ChatTurn]] = {}
        self.feedbacks: list[tuple[str, bool, str | None]] = []
        self.calls: list[tuple[str, Any]] = []
        self.gate: threading.Event | None = None  # when set: the "LLM stage" of a streamed chat waits for it
        self.ranked = threading.Event()
        self.closed = False

    def verify(self) -> dict[str, str]:
        if self.verify_error:
            raise self.verify_error
        return {"graph": "fake"}

    def recommend(self, user_id: str | None, k: int = 10, **kw: Any) -> Recommendation:
        self.calls.append(("recommend", {"user_id": user_id, "k": k, **kw}))
        if self.fail:
            raise self.fail
        return _rec(user_id, ["m1", "m2"][:k])

    def new_session(self, user_id: str | None = None) -> str:
        sid = f"s{len(self.sessions) + 1}"
        self.sessions[sid] = []
        return sid

    def chat(
        self,
        session_id: str,
        message: str,
        *,
        user_id: str | None = None,
        k: int | None = None,
        on_progress: Callable[[ChatProgress], None] | None = None,
    ) -> ChatTurn:
        self.calls.append(("chat", {"session_id": session_id, "message": message, "user_id": user_id, "k": k}))
        turns = self.sessions.setdefault(session_id, [])
        now = time.time()
        turns.append(ChatTurn(session_id=session_id, role="user", text=message, action="answer", created_at=now))
        liked = [i for i, ok, _ in self.feedbacks if ok]
        rec = _rec(user_id, ["m2"] if liked else ["m1", "m2"])
        head = f"Here are {len(rec.items)} picks for you, friend."
        if on_progress is not None:
            on_progress(ChatProgress(session_id=session_id, stage="retrieving"))
            on_progress(ChatProgress(session_id=session_id, stage="ranking", text=head, items=rec.items[::-1]))
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        if self.fail:
            raise self.fail
        self.ranked.set()
        reply = ChatTurn(
            session_id=session_id,
            role="assistant",
            text=head + ("\n1. Alpha\n2. Beta" if on_progress is not None else ""),
            action="recommend",
            recommendation=rec,
            items=tuple(it.item_id for it in rec.items),
            created_at=now,
        )
        turns.append(reply)
        return reply

    def chat_history(self, session_id: str) -> list[ChatTurn]:
        if session_id not in self.sessions:
            raise NotFound(f"unknown session {session_id!r}")
        return self.sessions[session_id]

    def feedback(self, item_id: str, liked: bool, *, session_id: str | None = None, user_id: str | None = None) -> None:
        if item_id not in ITEMS:
            raise NotFound(f"unknown item id {item_id!r}")
        self.feedbacks.append((item_id, liked, session_id))

    def similar(self, item_id: str | int, k: int = 10) -> list[tuple[Item, float]]:
        return [(it, 0.5) for i, it in ITEMS.items() if i != str(item_id)][:k]

    def search(self, query: str, k: int = 10) -> list[tuple[Item, float]]:
        return [(it, 0.5) for it in ITEMS.values() if query.lower() in it.title.lower()][:k]

    def item(self, item_id: str | int, *, facts: int = 50) -> ItemDetails:
        self.calls.append(("item", {"item_id": item_id, "facts": facts}))
        if str(item_id) not in ITEMS:
            raise NotFound(f"unknown item id {item_id!r}")
        return ItemDetails(item=ITEMS[str(item_id)], facts=(FACT,)[:facts] if item_id == "m1" else ())

    def session_profile(self, session_id: str) -> SessionProfile:
        if session_id not in self.sessions:
            raise NotFound(f"unknown session {session_id!r}")
        return SessionProfile(session_id=session_id)

    def stats(self) -> dict[str, int]:
        return {"items": len(ITEMS), "facts": 1, "entities": 1, "users": 0, "interactions": 0}

    def info(self) -> dict[str, Any]:
        return {"stats": self.stats()}

    def close(self) -> None:
        self.closed = True


def _client(tmp_path: Path, **server: Any) -> tuple[TestClient, FakeRecommender]:
    settings = Settings(data_dir=tmp_path, llm={"backend": "none"}, ranker={"mode": "none"}, server=server)
    fake = FakeRecommender(settings)
    assert isinstance(fake, RecommenderAPI)
    app = create_app(fake, settings)
    return TestClient(app, raise_server_exceptions=False), fake


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, FakeRecommender]]:
    c, fake = _client(tmp_path)
    with c:
        yield c, fake


def _err(resp: Any, status: int, type_: str | None = None, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["message"]
    if type_ is not None:
        assert err["type"] == type_
    if field is not None:
        assert err["field"] == field
    return err


def test_recommendations_and_items(client):
    c, fake = client
    r = c.post("/v1/recommendations", json={"user_id": "u1", "k": 2, "query": "funny", "exclude": ["m9"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [it["item_id"] for it in body["items"]] == ["m1", "m2"]
    assert body["items"][0]["facts"][0]["id"] == FACT.id
    assert fake.calls[-1][1] == {
        "user_id": "u1",
        "k": 2,
        "query": "funny",
        "diversity": 0.3,
        "exclude": ["m9"],
        "mode": None,
    }
    r = c.get("/v1/items/m1?facts=7")
    assert r.status_code == 200
    assert r.json()["item"]["title"] == "Alpha" and r.json()["facts"][0]["relation"] == "director"
    assert fake.calls[-1] == ("item", {"item_id": "m1", "facts": 7})
    _err(c.get("/v1/items/nope"), 404, "not_found")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"k": 0}, "body.k"),
        ({"k": 101}, "body.k"),  # above server.max_k (100)
        ({"k": "many"}, "body.k"),
        ({"diversity": 2}, "body.diversity"),
        ({"mode": "verbalizer"}, "body.mode"),  # needs an LLM; this server has none
        ({"mode": "magic"}, "body.mode"),
        ({"colour": "red"}, "body.colour"),
        ({"exclude": "m1"}, "body.exclude"),
    ],
)
def test_invalid_input_names_the_field(client, payload, field):
    c, _ = client
    _err(c.post("/v1/recommendations", json=payload), 422, field=field)


def test_malformed_and_missing_bodies(client):
    c, _ = client
    err = _err(c.post("/v1/recommendations", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert err["field"].startswith("body")
    _err(c.post("/v1/feedback"), 422, field="body")
    bad_utf8 = c.post("/v1/feedback", content=b'{"item_id": "\xff\xfe"}', headers={"content-type": "application/json"})
    _err(bad_utf8, 422, field="body")
    _err(c.post("/v1/feedback", json={"item_id": "m1"}), 422, field="body.liked")
    _err(c.post("/v1/sessions/s1/messages", json={"message": ""}), 422, field="body.message")
    _err(c.get("/v1/items/m1?facts=-1"), 422, field="query.facts")
    _err(c.get("/v1/nothing-here"), 404, "not_found")
    assert _err(c.delete("/v1/recommendations"), 405).get("field") == "method"
    assert c.delete("/v1/recommendations").headers["allow"] == "POST"


def test_body_limit_413(tmp_path):
    c, _ = _client(tmp_path, max_body_bytes=2048)
    big = {"user_id": "u1", "query": "x" * 1500, "exclude": ["m" * 100] * 10}
    _err(c.post("/v1/recommendations", json=big), 413, "payload_too_large", "body")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield b'{"user_id": "u1", "exclude": ['
        for _ in range(100):
            yield b'"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm",'
        yield b'"m"]}'

    _err(c.post("/v1/recommendations", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert c.post("/v1/recommendations", json={"user_id": "u1", "k": 1}).status_code == 200


def test_api_key(tmp_path):
    c, _ = _client(tmp_path, api_key="s3cret")
    err = _err(c.post("/v1/recommendations", json={"k": 1}), 401, "unauthorized")
    assert "API key" in err["message"]
    _err(c.post("/v1/recommendations", json={"k": 1}, headers={"Authorization": "Bearer wrong"}), 401)
    _err(c.post("/v1/recommendations", json={"k": 1}, headers={"X-API-Key": "wrong"}), 401)
    _err(c.get("/v1/models"), 401)
    _err(c.get("/openapi.json"), 401)
    # the key is checked before the body is read: a bad body without a key is still 401
    _err(c.post("/v1/recommendations", content=b"{", headers={"content-type": "application/json"}), 401)
    assert c.post("/v1/recommendations", json={"k": 1}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.post("/v1/recommendations", json={"k": 1}, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/v1/models", headers={"Authorization": "bearer s3cret"}).status_code == 200
    for public in ("/healthz", "/readyz", "/", "/static/app.js", "/static/style.css"):
        assert c.get(public).status_code == 200, public
    schema = c.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()
    assert {"bearer", "apiKey"} <= set(schema["components"]["securitySchemes"])
    assert "401" in schema["paths"]["/v1/recommendations"]["post"]["responses"]


def test_cors_preflight_without_key(tmp_path):
    c, _ = _client(tmp_path, api_key="k", cors_origins=["http://example.test"])
    r = c.options(
        "/v1/recommendations",
        headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://example.test"
    r = c.get("/v1/models", headers={"Origin": "http://example.test"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://example.test"


def test_readiness(client):
    c, fake = client
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    fake.verify_error = StoreUnavailable("cannot reach bolt://nowhere:7687")
    r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"
    assert r.json()["error"] == {
        "type": "store_unavailable",
        "message": "cannot reach bolt://nowhere:7687",
        "field": None,
        "errors": None,
    }
    fake.verify_error = LLMError("llm down")
    assert c.get("/readyz").json()["error"]["type"] == "llm_unavailable"
    assert c.get("/healthz").status_code == 200  # liveness does no I/O


def test_sdk_errors_map_to_status_codes(client):
    c, fake = client
    fake.fail = LLMError("the LLM server timed out", retryable=True)
    r = c.post("/v1/recommendations", json={})
    _err(r, 503, "llm_unavailable")
    assert r.headers["retry-after"] == "1"
    fake.fail = StoreUnavailable("graph store gone")
    _err(c.post("/v1/recommendations", json={}), 503, "store_unavailable")
    fake.fail = NotFound("the store is empty")
    _err(c.post("/v1/recommendations", json={}), 404)
    fake.fail = RuntimeError("boom with secrets")
    r = c.post("/v1/recommendations", json={})
    err = _err(r, 500, "internal_error")
    assert "boom" not in r.text and "Traceback" not in r.text and err["message"]


def test_sessions_messages_feedback(client):
    c, fake = client
    r = c.post("/v1/sessions", json={"user_id": "u1"})
    assert r.status_code == 201
    sid = r.json()["session_id"]
    assert c.post("/v1/sessions").status_code == 201  # body optional
    r = c.post(f"/v1/sessions/{sid}/messages", json={"message": "something funny", "k": 2})
    assert r.status_code == 200, r.text
    turn = r.json()
    assert turn["role"] == "assistant" and turn["action"] == "recommend"
    assert turn["items"] == ["m1", "m2"] and turn["recommendation"]["items"][0]["reasons"]
    r = c.post("/v1/feedback", json={"item_id": "m1", "liked": True, "session_id": sid})
    assert r.status_code == 200 and r.json() == {"ok": True, "item_id": "m1", "liked": True}
    assert fake.feedbacks == [("m1", True, sid)]
    _err(c.post("/v1/feedback", json={"item_id": "zzz", "liked": False, "user_id": "u1"}), 404)
    _err(c.post("/v1/feedback", json={"item_id": "m1", "liked": False}), 422, field="body.session_id")
    hist = c.get(f"/v1/sessions/{sid}").json()
    assert hist["session_id"] == sid and [t["role"] for t in hist["turns"]] == ["user", "assistant"]
    _err(c.get("/v1/sessions/unknown"), 404, "not_found")
    _err(c.post(f"/v1/sessions/{sid}/messages", json={"message": "hi", "k": 500}), 422, field="body.k")
    # no k: the SDK's chat.k decides, not a number of the server's own
    assert c.post(f"/v1/sessions/{sid}/messages", json={"message": "more"}).status_code == 200
    assert fake.calls[-1][1]["k"] is None


def test_openai_chat_completion(client):
    c, fake = client
    r = c.post("/v1/chat/completions", json={"model": "knowrec", "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "knowrec"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Here are 2 picks for you, friend."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["knowrec"]["items"] == ["m1", "m2"] and body["knowrec"]["action"] == "recommend"
    assert r.headers["x-session-id"] == body["knowrec"]["session_id"]
    assert fake.calls[-1][1]["k"] is None  # chat.k decides
    c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello"}], "k": 7})
    assert fake.calls[-1][1]["k"] == 7
    # the same `user` continues the same session; X-Session-Id wins over it
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": [{"type": "text", "text": "more"}]}]
    a = c.post("/v1/chat/completions", json={"messages": msgs, "user": "alice"}).json()["knowrec"]["session_id"]
    b = c.post("/v1/chat/completions", json={"messages": msgs, "user": "alice"}).json()["knowrec"]["session_id"]
    assert a == b
    assert fake.calls[-1][1]["message"] == "more"
    h = c.post("/v1/chat/completions", json={"messages": msgs, "user": "alice"}, headers={"X-Session-Id": "mine"})
    assert h.json()["knowrec"]["session_id"] == "mine"
    _err(c.post("/v1/chat/completions", json={"model": "gpt-4", "messages": msgs}), 422, field="body.model")
    _err(c.post("/v1/chat/completions", json={"messages": []}), 422, field="body.messages")
    _err(c.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]}), 422)
    models = c.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["knowrec"]


def test_openai_chat_completion_stream(client):
    c, _ = client
    payload = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
    with c.stream("POST", "/v1/chat/completions", json=payload) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
    assert text == "Here are 2 picks for you, friend.\n1. Alpha\n2. Beta"
    stages = [ch["knowrec"]["stage"] for ch in chunks if "stage" in ch.get("knowrec", {})]
    assert stages == ["retrieving", "ranking"]
    first = next(ch for ch in chunks if ch["choices"][0]["delta"].get("content"))
    assert first["knowrec"]["stage"] == "ranking" and first["knowrec"]["items"] == ["m2", "m1"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["knowrec"]["items"] == ["m1", "m2"]


@pytest.fixture
def live_fake(tmp_path: Path) -> Iterator[tuple[str, FakeRecommender]]:
    """The app on a real uvicorn server in a thread (the test client buffers whole responses; this streams)."""
    import uvicorn

    settings = Settings(data_dir=tmp_path, llm={"backend": "none"}, ranker={"mode": "none"})
    fake = FakeRecommender(settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(fake, settings), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", fake
    server.should_exit = True
    thread.join(10)


def _sse_lines(resp: httpx.Response) -> Iterator[str]:
    for line in resp.iter_lines():
        if line:
            yield line


def test_streamed_chat_sends_its_first_line_before_the_llm_is_done(live_fake):
    base, fake = live_fake
    fake.gate = threading.Event()
    payload = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
    with httpx.stream("POST", base + "/v1/chat/completions", json=payload, timeout=30) as r:
        assert r.status_code == 200 and r.headers["x-session-id"]
        lines = _sse_lines(r)
        first_text = None
        for line in lines:
            chunk = json.loads(line.removeprefix("data: "))
            if chunk["choices"][0]["delta"].get("content"):
                first_text = chunk
                break
        assert first_text is not None
        assert first_text["choices"][0]["delta"]["content"] == "Here are 2 picks for you, friend.\n"
        assert not fake.ranked.is_set()  # the first line arrived while the "LLM" still waits
        fake.gate.set()
        rest = list(lines)
    assert rest[-1] == "data: [DONE]" and fake.ranked.is_set()
    last = json.loads(rest[-2].removeprefix("data: "))
    assert last["choices"][0]["finish_reason"] == "stop" and last["knowrec"]["items"] == ["m1", "m2"]


def test_a_second_chat_streams_its_first_line_while_the_first_is_ranking(live_fake):
    """No request-wide lock: the in-process model serialises its own calls, not whole requests."""
    base, fake = live_fake
    fake.gate = threading.Event()
    payload = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
    with httpx.stream("POST", base + "/v1/chat/completions", json=payload, headers={"X-Session-Id": "a"}) as first:
        lines_a = _sse_lines(first)
        assert any('"stage": "ranking"' in line for line in lines_a)  # the first request is in its "LLM stage"
        with httpx.stream("POST", base + "/v1/chat/completions", json=payload, headers={"X-Session-Id": "b"}) as second:
            lines_b = _sse_lines(second)
            assert any('"content": "Here are' in line for line in lines_b)
            assert not fake.ranked.is_set()
            fake.gate.set()
            assert list(lines_b)[-1] == "data: [DONE]"
        assert list(lines_a)[-1] == "data: [DONE]"


def test_streamed_session_message_progress_then_turn(live_fake):
    base, fake = live_fake
    fake.gate = threading.Event()
    with httpx.stream("POST", base + "/v1/sessions/s9/messages", json={"message": "hi", "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = _sse_lines(r)
        events: list[tuple[str, dict[str, Any]]] = []
        for line in lines:
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            else:
                events.append((name, json.loads(line.removeprefix("data: "))))
                if events[-1][1].get("stage") == "ranking":
                    break
        assert [(n, e["stage"]) for n, e in events] == [("progress", "retrieving"), ("progress", "ranking")]
        assert [it["item_id"] for it in events[-1][1]["items"]] == ["m2", "m1"] and not fake.ranked.is_set()
        fake.gate.set()
        rest = list(lines)
    assert rest[0] == "event: turn"
    turn = json.loads(rest[1].removeprefix("data: "))
    assert turn["items"] == ["m1", "m2"] and turn["text"].startswith(events[-1][1]["text"])


def test_streamed_chat_failure_is_the_last_event(live_fake):
    base, fake = live_fake
    fake.fail = StoreUnavailable("graph store down")
    with httpx.stream("POST", base + "/v1/sessions/s9/messages", json={"message": "hi", "stream": True}) as r:
        lines = list(_sse_lines(r))
    assert lines[-2] == "event: error"
    assert json.loads(lines[-1].removeprefix("data: "))["error"]["type"] == "store_unavailable"
    payload = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
    with httpx.stream("POST", base + "/v1/chat/completions", json=payload) as r:
        lines = list(_sse_lines(r))
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["error"]["type"] == "store_unavailable"


def test_web_page_is_served(client):
    c, _ = client
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for marker in ('id="conversation"', 'id="message"', 'id="send"', 'id="api-key"', "/static/app.js"):
        assert marker in r.text
    js = c.get("/static/app.js").text
    assert "/v1/feedback" in js and "innerHTML" not in js  # cards are built with textContent only
    assert "http://" not in r.text + js and "https://" not in r.text + js  # nothing from a CDN


def test_openapi_schema(client):
    c, _ = client
    schema = c.get("/openapi.json").json()
    paths = schema["paths"]
    for p in (
        "/v1/recommendations",
        "/v1/sessions",
        "/v1/sessions/{session_id}/messages",
        "/v1/sessions/{session_id}",
        "/v1/feedback",
        "/v1/items/{item_id}",
        "/healthz",
        "/readyz",
        "/v1/chat/completions",
        "/v1/models",
    ):
        assert p in paths, p
    assert "/" not in paths


def test_store_calls_never_wait_for_a_running_recommendation(tmp_path):
    """With the in-process LLM, an item lookup (or a session, history or feedback call) sent while a recommendation
    runs comes back first."""
    import threading

    settings = Settings(data_dir=tmp_path, llm={"backend": "llama_cpp"}, ranker={"mode": "none"})
    fake = FakeRecommender(settings)
    started = threading.Event()
    slow_recommend = fake.recommend

    def recommend(user_id, k=10, **kw):
        started.set()
        time.sleep(1.5)  # an LLM rank stage
        return slow_recommend(user_id, k, **kw)

    fake.recommend = recommend  # type: ignore[method-assign]
    finished: dict[str, float] = {}
    with TestClient(create_app(fake, settings)) as c:

        def slow() -> None:
            assert c.post("/v1/recommendations", json={"user_id": "u1", "k": 2}).status_code == 200
            finished["recommend"] = time.perf_counter()

        t = threading.Thread(target=slow)
        t.start()
        assert started.wait(5)
        assert c.get("/v1/items/m1").status_code == 200
        finished["item"] = time.perf_counter()
        sid = c.post("/v1/sessions", json={}).json()["session_id"]
        assert c.get(f"/v1/sessions/{sid}").status_code == 200
        finished["session"] = time.perf_counter()
        t.join()
    assert finished["item"] < finished["recommend"] and finished["session"] < finished["recommend"]


def test_one_error_table_maps_every_knowrec_error_and_the_answers_follow_it(client):
    """Every error class of knowrec.errors has its own row (none falls through to the generic 503), and a failing
    route answers exactly the table's status and type."""
    import inspect

    import knowrec.errors as errors_module
    from knowrec.server.errors import ERROR_TABLE, error_status

    classes = [
        c
        for _, c in inspect.getmembers(errors_module, inspect.isclass)
        if issubclass(c, errors_module.KnowrecError) and c is not errors_module.KnowrecError
    ]
    rows = {row.error for row in ERROR_TABLE}
    assert classes and all(c in rows for c in classes), [c.__name__ for c in classes if c not in rows]
    c, fake = client
    for row in ERROR_TABLE:
        exc = row.error("it failed") if row.error is not errors_module.InvalidInput else row.error("bad", field="x")
        assert error_status(exc) == (row.status, row.type)
        fake.fail = exc
        r = c.post("/v1/recommendations", json={"user_id": "u1"})
        assert (r.status_code, r.json()["error"]["type"]) == (row.status, row.type), row
    assert error_status(KeyError("x")) == (500, "internal_error")


def test_the_server_warms_the_recommender_up_at_start_and_starts_when_that_fails(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, llm={"backend": "none"}, ranker={"mode": "none"})
    calls: list[str] = []
    fake = FakeRecommender(settings)
    fake.warm_up = lambda: calls.append("warm_up") or {"pipeline": 0.0}  # type: ignore[attr-defined]
    with TestClient(create_app(fake, settings)) as c:
        assert calls == ["warm_up"]  # before the first request
        assert c.get("/healthz").status_code == 200

    def down() -> dict[str, float]:
        raise StoreUnavailable("cannot open the graph at bolt://127.0.0.1:9")

    broken = FakeRecommender(settings)
    broken.warm_up = down  # type: ignore[attr-defined]
    with TestClient(create_app(broken, settings)) as c:  # /readyz reports a store that is down; start anyway
        assert c.get("/healthz").status_code == 200
