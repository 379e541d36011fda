"""The FastAPI app: REST endpoints, an OpenAI-compatible chat endpoint and the web chat page.

Every blocking SDK call runs in a worker thread, never on the event loop, and requests run concurrently: the
in-process model's client runs one LLM call at a time (a lock around each call, not around the request), so
retrieval, facts and store-only calls (items, sessions, history, feedback) never wait for another request's LLM
stage; with an LLM server (vLLM) the LLM calls overlap too.

Example:
    >>> from knowrec import Recommender, Settings
    >>> from knowrec.server import create_app
    >>> app = create_app(Recommender(Settings(data_dir="/tmp/kr")))  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, port=8080)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Body, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from knowrec.config import ServerConfig, Settings
from knowrec.errors import ConfigError, InvalidInput, KnowrecError, LLMError, NotFound, StoreUnavailable
from knowrec.recommender import Recommender
from knowrec.server.schemas import (
    MODEL_NAME,
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionRequest,
    CompletionMessage,
    CompletionUsage,
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    ItemResponse,
    KnowrecExtra,
    MessageRequest,
    ModelCard,
    ModelList,
    Readiness,
    RecommendationRequest,
    SessionCreate,
    SessionCreated,
    SessionHistory,
)
from knowrec.types import ChatProgress, ChatTurn, Recommendation

__all__ = ["create_app"]

log = logging.getLogger(__name__)

T = TypeVar("T")

STATIC_DIR = Path(str(files("knowrec.server") / "static"))
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/favicon.ico"})
"""Reachable without an API key (besides ``/static/…``)."""

_ERRORS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": name.replace("_", " ")}
    for code, name in _ERRORS.items()
    if code in (401, 404, 413, 422, 503)
}


def _error(
    status: int, message: str, *, type: str | None = None, field: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": type or _ERRORS.get(status, "error"), "message": message, "field": field}
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc) if loc else ""


# -- ASGI guard: API key and body size, before anything is parsed -------------------------------------------------
class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class Guard:
    """Pure ASGI middleware: API-key check (401) and request-size limit (413) ahead of routing and parsing."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.key = config.api_key.get_secret_value().encode() if config.api_key else None
        self.limit = config.max_body_bytes

    @staticmethod
    def public(path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith("/static/")

    def authorised(self, headers: dict[bytes, bytes]) -> bool:
        assert self.key is not None
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given, self.key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path = scope["path"]
        if (
            self.key is not None
            and scope["method"] != "OPTIONS"
            and not self.public(path)
            and not self.authorised(headers)
        ):
            has_key = b"x-api-key" in headers or b"authorization" in headers
            msg = "invalid API key" if has_key else "missing API key: send Authorization: Bearer KEY or X-API-Key: KEY"
            await _error(401, msg, field="header.authorization")(scope, receive, send)
            return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await _error(400, "invalid Content-Length header", field="header.content-length")(scope, receive, send)
                return
            if n > self.limit:
                await _error(413, f"request body larger than {self.limit} bytes", field="body")(scope, receive, send)
                return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)


# -- the app -----------------------------------------------------------------------------------------------------
def create_app(recommender: Recommender | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the API around a :class:`~knowrec.Recommender` (built from ``settings`` when not given).

    A recommender passed in stays the caller's to close; one built here is closed at shutdown.

    Returns:
        the app; serve it with uvicorn (``knowrec serve`` does).
    """
    owned = recommender is None
    if recommender is None:
        settings = settings or Settings()
        recommender = Recommender(settings)
    settings = settings or recommender.settings
    cfg = settings.server
    rec = recommender

    async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """An SDK call in a worker thread. Calls run concurrently: the in-process model runs one LLM call at a time
        (its client holds a lock around each), the stores serialise their own writes, so retrieval, a chat's first
        line and store-only calls (items, sessions, history, feedback) never wait for another request's LLM stage."""
        return await run_in_threadpool(fn, *args, **kwargs)

    async def chat_events(
        session_id: str, message: str, user_id: str | None, k: int
    ) -> AsyncIterator[ChatProgress | ChatTurn]:
        """One chat turn as it happens: each :class:`ChatProgress` as its stage starts, then the :class:`ChatTurn`
        (the SDK call runs in a worker thread; a failure is raised after the progress already sent)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatProgress] = asyncio.Queue()

        def heard(event: ChatProgress) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        task = asyncio.ensure_future(call(rec.chat, session_id, message, user_id=user_id, k=k, on_progress=heard))
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                continue
            getter.cancel()
            while not queue.empty():
                yield queue.get_nowait()
            yield task.result()
            return

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            await call(rec.close)

    from knowrec import __version__

    app = FastAPI(
        title="knowrec",
        version=__version__,
        description=(
            "LLM recommendations grounded in knowledge-graph facts: REST, chat sessions and an OpenAI-compatible "
            "`/v1/chat/completions`. When an API key is configured, send `Authorization: Bearer KEY` or "
            "`X-API-Key: KEY` (not needed for `/healthz`, `/readyz` and the web page). Errors are "
            '`{"error": {"type", "message", "field"}}`.'
        ),
        lifespan=lifespan,
        responses={413: _ERROR_RESPONSES[413], 422: _ERROR_RESPONSES[422]},
    )
    app.state.recommender = rec
    app.state.settings = settings
    app.add_middleware(Guard, config=cfg)
    if cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Session-Id", "X-User-Id"],
            expose_headers=["X-Session-Id"],
        )
    if cfg.api_key is not None:
        _document_security(app)
    _install_error_handlers(app)

    def check_k(k: int) -> None:
        if k > cfg.max_k:
            raise InvalidInput(f"k must be at most {cfg.max_k}", field="body.k")

    verified: list[bool] = []

    # -- probes ---------------------------------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["probes"])
    async def healthz() -> Health:
        """Liveness: the process answers (no I/O)."""
        return Health()

    @app.get("/readyz", response_model=Readiness, tags=["probes"], responses={503: {"model": Readiness}})
    async def readyz() -> Any:
        """Readiness: every store and the LLM can be reached (``Recommender.verify``); 503 says which cannot."""
        try:
            # the first check builds the clients (under the lock); later ones need not wait behind a long chat turn
            report = await (run_in_threadpool(rec.verify) if verified else call(rec.verify))
            verified.append(True)
        except Exception as exc:  # any failure means "not ready", with the reason
            kind = _kind(exc)
            log.warning("not ready: %s", exc)
            body = Readiness(status="unavailable", error={"type": kind, "message": str(exc) or kind})
            return JSONResponse(body.model_dump(mode="json"), status_code=503)
        return Readiness(status="ready", components=report)

    # -- REST -----------------------------------------------------------------------------------------------------
    @app.post(
        "/v1/recommendations",
        response_model=Recommendation,
        tags=["recommend"],
        responses={k: v for k, v in _ERROR_RESPONSES.items() if k in (401, 404, 503)},
    )
    async def recommendations(body: RecommendationRequest) -> Recommendation:
        """Recommend ``k`` items for a user (or a cold-start query), each with reasons citing KG facts."""
        check_k(body.k)
        mode = body.mode
        if mode not in (None, "none") and settings.llm.backend == "none":
            raise InvalidInput(f"ranking mode {mode!r} needs an LLM, and this server has none", field="body.mode")
        return await call(
            rec.recommend,
            body.user_id,
            k=body.k,
            query=body.query,
            diversity=body.diversity,
            exclude=list(body.exclude),
            mode=mode,
        )

    @app.get(
        "/v1/items/{item_id}",
        response_model=ItemResponse,
        tags=["items"],
        responses={k: v for k, v in _ERROR_RESPONSES.items() if k in (401, 404, 503)},
    )
    async def item(
        item_id: str = PathParam(min_length=1, max_length=200),
        facts: int = Query(default=50, ge=0, le=500, description="How many of its facts (most informative first)."),
    ) -> ItemResponse:
        """One item and its knowledge-graph facts."""

        def get() -> ItemResponse:
            found = rec.store.items([item_id])
            if item_id not in found:
                raise NotFound(f"unknown item id {item_id!r}")
            item_facts = rec.store.facts([item_id], n=facts)[item_id] if facts else []
            return ItemResponse(item=found[item_id], facts=item_facts)

        return await call(get)

    @app.post(
        "/v1/sessions",
        response_model=SessionCreated,
        status_code=201,
        tags=["chat"],
        responses={k: v for k, v in _ERROR_RESPONSES.items() if k in (401, 503)},
    )
    async def new_session(body: Annotated[SessionCreate | None, Body()] = None) -> SessionCreated:
        """Start a chat session (optionally for a known user, whose history then shapes the answers)."""
        sid = await call(rec.new_session, body.user_id if body else None)
        return SessionCreated(session_id=sid)

    @app.post(
        "/v1/sessions/{session_id}/messages",
        response_model=ChatTurn,
        tags=["chat"],
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **{k: v for k, v in _ERROR_RESPONSES.items() if k in (401, 404, 503)},
        },
    )
    async def message(body: MessageRequest, session_id: str = PathParam(min_length=1, max_length=200)) -> Any:
        """Send a user message; returns the assistant's turn (a question, an answer or recommendations).

        ``stream: true`` answers with server-sent events instead: ``progress`` (a ``ChatProgress``: the stage, and
        at ``ranking`` the picks in retrieval order with the answer's first line, before the LLM reranks them), then
        one ``turn`` (the ``ChatTurn``), or ``error`` (the error body) if the turn failed.
        """
        check_k(body.k)
        if not body.stream:
            return await call(rec.chat, session_id, body.message, user_id=body.user_id, k=body.k)

        async def events() -> AsyncIterator[str]:
            try:
                async for ev in chat_events(session_id, body.message, body.user_id, body.k):
                    name = "turn" if isinstance(ev, ChatTurn) else "progress"
                    yield f"event: {name}\ndata: {ev.model_dump_json()}\n\n"
            except Exception as exc:  # the status line is sent: the error is the stream's last event
                yield f"event: error\ndata: {json.dumps(_error_payload(exc))}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get(
        "/v1/sessions/{session_id}",
        response_model=SessionHistory,
        tags=["chat"],
        responses={k: v for k, v in _ERROR_RESPONSES.items() if k in (401, 404)},
    )
    async def history(session_id: str = PathParam(min_length=1, max_length=200)) -> SessionHistory:
        """Every turn of a session, oldest first."""
        turns = await call(rec.chat_history, session_id)
        return SessionHistory(session_id=session_id, turns=list(turns))

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        tags=["chat"],
        responses={k: v for k, v in _ERROR_RESPONSES.items() if k in (401, 404, 503)},
    )
    async def feedback(body: FeedbackRequest) -> FeedbackResponse:
        """Like or dislike an item; it is stored and changes the next answer of the session / user."""
        if not body.session_id and not body.user_id:
            raise InvalidInput("feedback needs a session_id or a user_id", field="body.session_id")
        await call(rec.feedback, body.item_id, body.liked, session_id=body.session_id, user_id=body.user_id)
        return FeedbackResponse(item_id=body.item_id, liked=body.liked)

    # -- OpenAI-compatible ----------------------------------------------------------------------------------------
    @app.get("/v1/models", response_model=ModelList, tags=["openai"])
    async def models() -> ModelList:
        """The one model this server answers as: ``knowrec``."""
        return ModelList(data=[ModelCard(created=_STARTED)])

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        tags=["openai"],
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **{k: v for k, v in _ERROR_RESPONSES.items() if k in (401, 404, 503)},
        },
    )
    async def chat_completions(
        body: ChatCompletionRequest,
        x_session_id: str | None = Header(default=None, max_length=200),
        x_user_id: str | None = Header(default=None, max_length=200),
    ) -> Any:
        """OpenAI-compatible chat: the last user message goes to the chat agent.

        The session is ``X-Session-Id`` if sent, else derived from ``user``, else a new one; it is returned in the
        ``X-Session-Id`` response header and in ``knowrec.session_id``. ``X-User-Id`` names a known user whose
        history shapes the answers. ``stream: true`` answers with ``chat.completion.chunk`` server-sent events.
        """
        check_k(body.k)
        if body.model != MODEL_NAME:
            raise InvalidInput(f"unknown model {body.model!r}; this server has only {MODEL_NAME!r}", field="body.model")
        users = [m for m in body.messages if m.role == "user"]
        text = users[-1].text().strip() if users else ""
        if not text:
            raise InvalidInput("messages must contain a user message with text", field="body.messages")
        if x_session_id:
            sid = x_session_id
        elif body.user:
            sid = "user-" + uuid.uuid5(uuid.NAMESPACE_URL, "knowrec:" + body.user).hex
        else:
            sid = await call(rec.new_session, x_user_id)
        cid = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        if body.stream:
            return StreamingResponse(
                _sse(cid, created, text, chat_events(sid, text, x_user_id, body.k)),
                media_type="text/event-stream",
                headers={"X-Session-Id": sid, "Cache-Control": "no-cache"},
            )
        turn = await call(rec.chat, sid, text, user_id=x_user_id, k=body.k)
        extra, usage = _completion_extra(text, turn)
        headers = {"X-Session-Id": turn.session_id}
        completion = ChatCompletion(
            id=cid,
            created=created,
            choices=[ChatCompletionChoice(message=CompletionMessage(content=turn.text))],
            usage=usage,
            knowrec=extra,
        )
        return JSONResponse(completion.model_dump(mode="json"), headers=headers)

    # -- the web page ---------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


_STARTED = int(time.time())


def _tokens(text: str) -> int:
    """A rough token count (words) for the ``usage`` block; knowrec's own LLM usage is in the recommendation."""
    return len(text.split())


def _completion_extra(asked: str, turn: ChatTurn) -> tuple[KnowrecExtra, CompletionUsage]:
    """The ``knowrec`` block and the ``usage`` of a chat completion answering ``asked`` with ``turn``."""
    extra = KnowrecExtra(
        session_id=turn.session_id, action=turn.action, items=list(turn.items), recommendation=turn.recommendation
    )
    usage = CompletionUsage(
        prompt_tokens=_tokens(asked), completion_tokens=_tokens(turn.text), total_tokens=_tokens(asked + turn.text)
    )
    return extra, usage


def _chunks(text: str, size: int = 3) -> Iterator[str]:
    words = text.split(" ")
    for i in range(0, len(words), size):
        yield " ".join(words[i : i + size]) + (" " if i + size < len(words) else "")


async def _sse(
    cid: str, created: int, asked: str, events: AsyncIterator[ChatProgress | ChatTurn]
) -> AsyncIterator[str]:
    """``chat.completion.chunk`` events: the role at once, each stage as an empty delta with ``knowrec.stage``, the
    answer's first line as soon as retrieval has run (with the picks in retrieval order), the rest when the turn
    lands; a failure ends the stream with an ``error`` object."""

    def event(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        chunk = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL_NAME,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **more,
        }
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    sent = ""
    try:
        async for ev in events:
            if isinstance(ev, ChatProgress):
                stage = {"session_id": ev.session_id, "stage": ev.stage, "items": [it.item_id for it in ev.items]}
                if ev.text and not sent:
                    sent = ev.text + "\n"
                    yield event({"content": sent}, knowrec=stage)
                else:
                    yield event({}, knowrec=stage)
                continue
            turn = ev
            rest = turn.text[len(sent) :] if turn.text.startswith(sent) else "\n" + turn.text
            for piece in _chunks(rest):
                yield event({"content": piece})
            extra, usage = _completion_extra(asked, turn)
            yield event({}, "stop", usage=usage.model_dump(), knowrec=extra.model_dump(mode="json"))
    except Exception as exc:  # the status line is sent: the error is the stream's last event
        yield f"data: {json.dumps(_error_payload(exc))}\n\n"
    yield "data: [DONE]\n\n"


def _kind(exc: BaseException) -> str:
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, InvalidInput):
        return "invalid_request"
    if isinstance(exc, StoreUnavailable):
        return "store_unavailable"
    if isinstance(exc, LLMError):
        return "llm_unavailable"
    if isinstance(exc, ConfigError):
        return "config_error"
    return "internal_error"


def _document_security(app: FastAPI) -> None:
    """Declare the API-key schemes in the OpenAPI schema (enforced by :class:`Guard`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for path, ops in schema.get("paths", {}).items():
            if Guard.public(path):
                continue
            for op in ops.values():
                op["security"] = [{"bearer": []}, {"apiKey": []}]
                op.setdefault("responses", {}).setdefault(
                    "401",
                    {
                        "description": "missing or wrong API key",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                    },
                )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error_response(exc: BaseException) -> JSONResponse:
    """The JSON error answer of a failed SDK call (also sent as the last event of a stream that fails)."""
    if isinstance(exc, NotFound):
        return _error(404, str(exc))
    if isinstance(exc, InvalidInput):
        return _error(422, exc.message, field=exc.field)
    if isinstance(exc, LLMError):
        resp = _error(503, str(exc), type="llm_unavailable", retryable=exc.retryable)
        if exc.retryable:
            resp.headers["Retry-After"] = "1"
        return resp
    if isinstance(exc, StoreUnavailable):
        return _error(503, str(exc), type="store_unavailable")
    if isinstance(exc, ConfigError):
        return _error(503, str(exc), type="config_error")
    if isinstance(exc, KnowrecError):
        return _error(503, str(exc), type="unavailable")
    log.exception("unexpected error: %s", exc, exc_info=exc)
    return _error(500, "internal error (see the server log)", type="internal_error")


def _error_payload(exc: BaseException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(bytes(_error_response(exc).body))
    return body


def _install_error_handlers(app: FastAPI) -> None:
    async def validation(_: Request, exc: Exception) -> JSONResponse:
        errors = list(exc.errors()) if isinstance(exc, RequestValidationError | ValidationError) else []
        first = errors[0] if errors else {}
        field = _loc(first.get("loc"))
        msg = str(first.get("msg", "invalid request"))
        if isinstance(exc, RequestValidationError) and first.get("type") == "missing" and field == "body":
            msg = "a JSON request body is required"
        detail = [{"loc": _loc(e.get("loc")), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
        return _error(
            422, f"{field}: {msg}" if field else msg, field=field or None, errors=detail if len(detail) > 1 else None
        )

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 413:
            return _error(413, str(exc.detail), field="body")
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # e.g. not UTF-8
            return _error(422, "the body is not valid JSON (UTF-8)", field="body")
        resp = _error(exc.status_code, str(exc.detail), field="method" if exc.status_code == 405 else None)
        for name, value in (exc.headers or {}).items():  # e.g. Allow on 405
            resp.headers[name] = value
        return resp

    async def knowrec_error(_: Request, exc: Exception) -> JSONResponse:
        return _error_response(exc)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        return _error_response(exc)

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        RequestValidationError: validation,
        ValidationError: validation,
        HTTPException: http_error,
        KnowrecError: knowrec_error,
        Exception: unexpected,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
