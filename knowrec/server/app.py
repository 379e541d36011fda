"""The FastAPI app: REST endpoints, an OpenAI-compatible chat endpoint and the web chat page.

:func:`create_app` serves any :class:`~knowrec.api.RecommenderAPI` (the concrete :class:`~knowrec.Recommender` by
default); the routes live in :mod:`knowrec.server.routes`, one router per concern, and errors map to HTTP through
the one table in :mod:`knowrec.server.errors`.

Every blocking SDK call runs in a worker thread, never on the event loop, and requests run concurrently: the
in-process model's client runs one LLM call at a time (a lock around each call, not around the request), so
retrieval, facts and store-only calls (items, sessions, history, feedback) never wait for another request's LLM
stage; with an LLM server (vLLM) the LLM calls overlap too.

Example:
    >>> from knowrec import Recommender, Settings
    >>> from knowrec.server import create_app
    >>> app = create_app(Recommender(Settings(data_dir="/tmp/kr")))
    >>> sorted(p for p in app.openapi()["paths"] if p.startswith("/v1/"))[:3]
    ['/v1/chat/completions', '/v1/feedback', '/v1/items/{item_id}']
    >>> import uvicorn; uvicorn.run(app, port=8080)  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from knowrec.api import RecommenderAPI
from knowrec.config import ServerConfig, Settings
from knowrec.errors import KnowrecError
from knowrec.server.deps import call
from knowrec.server.errors import error, install_error_handlers, responses
from knowrec.server.routes import ROUTERS
from knowrec.server.routes.web import STATIC_DIR

__all__ = ["Guard", "create_app"]

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/favicon.ico"})
"""Reachable without an API key (besides ``/static/…``)."""


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
            await error(401, msg, field="header.authorization")(scope, receive, send)
            return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await error(400, "invalid Content-Length header", field="header.content-length")(scope, receive, send)
                return
            if n > self.limit:
                await error(413, f"request body larger than {self.limit} bytes", field="body")(scope, receive, send)
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


def create_app(recommender: RecommenderAPI | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the API around a recommender (a :class:`~knowrec.Recommender` built from ``settings`` when not given).

    A recommender passed in stays the caller's to close; one built here is closed at shutdown.

    Returns:
        the app; serve it with uvicorn (``knowrec serve`` does).
    """
    owned = recommender is None
    if recommender is None:
        from knowrec.recommender import Recommender

        settings = settings or Settings()
        recommender = Recommender(settings)
    settings = settings or recommender.settings
    cfg = settings.server
    rec = recommender

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warm_up = getattr(rec, "warm_up", None)
        if warm_up is not None:  # the first requests should not pay for loading models and caches
            try:
                log.info("warmed up in %s s", await call(warm_up))
            except KnowrecError as exc:  # a store that is down now is /readyz's to report, not a reason not to start
                log.warning("warm-up failed: %s", exc)
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
        responses=responses(413, 422),
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
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


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
