"""How errors reach HTTP clients: one table from error class to status and type, and the JSON error body.

Every error answer is ``{"error": {"type", "message", "field", …}}``. A :class:`~knowrec.errors.KnowrecError` maps
through :data:`ERROR_TABLE` (the first row whose class matches, so subclasses come before their parents); anything
else is a 500 ``internal_error`` whose message hides the details (they go to the server log).

Example:
    >>> from knowrec.errors import LLMError, NotFound
    >>> error_status(NotFound("unknown item id 'x'"))
    (404, 'not_found')
    >>> error_status(LLMError("timed out", retryable=True))
    (503, 'llm_unavailable')
    >>> error_status(RuntimeError("boom"))
    (500, 'internal_error')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from knowrec.errors import (
    ConfigError,
    InvalidInput,
    InvalidSetting,
    KnowrecError,
    LLMError,
    NotFound,
    StoreUnavailable,
)
from knowrec.server.schemas import ErrorBody

__all__ = [
    "ERROR_TABLE",
    "STATUS_TYPES",
    "error",
    "error_payload",
    "error_response",
    "error_status",
    "install_error_handlers",
    "responses",
]

log = logging.getLogger(__name__)


class ErrorRow(NamedTuple):
    """One row of :data:`ERROR_TABLE`."""

    error: type[KnowrecError]
    status: int
    type: str


ERROR_TABLE: tuple[ErrorRow, ...] = (
    ErrorRow(NotFound, 404, "not_found"),
    ErrorRow(InvalidInput, 422, "invalid_request"),
    ErrorRow(LLMError, 503, "llm_unavailable"),
    ErrorRow(StoreUnavailable, 503, "store_unavailable"),
    ErrorRow(InvalidSetting, 503, "config_error"),  # the server's own settings: not the request's fault
    ErrorRow(ConfigError, 503, "config_error"),
    ErrorRow(KnowrecError, 503, "unavailable"),
)
"""Error class → HTTP status and error type; the first matching row wins."""

STATUS_TYPES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}
"""The error type of an answer that has only a status (HTTP-level errors, e.g. 405 from routing)."""


def error_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error type of ``exc`` (see :data:`ERROR_TABLE`)."""
    for row in ERROR_TABLE:
        if isinstance(exc, row.error):
            return row.status, row.type
    return 500, "internal_error"


def error(
    status: int, message: str, *, type: str | None = None, field: str | None = None, **extra: Any
) -> JSONResponse:
    """An error answer: ``{"error": {"type", "message", "field", **extra}}``."""
    body: dict[str, Any] = {"type": type or STATUS_TYPES.get(status, "error"), "message": message, "field": field}
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def error_response(exc: BaseException) -> JSONResponse:
    """The JSON error answer of a failed SDK call (also sent as the last event of a stream that fails)."""
    status, kind = error_status(exc)
    if status == 500:
        log.exception("unexpected error: %s", exc, exc_info=exc)
        return error(500, "internal error (see the server log)", type=kind)
    if isinstance(exc, InvalidInput):
        return error(status, exc.message, type=kind, field=exc.field)
    if isinstance(exc, LLMError):
        resp = error(status, str(exc), type=kind, retryable=exc.retryable)
        if exc.retryable:
            resp.headers["Retry-After"] = "1"
        return resp
    return error(status, str(exc), type=kind)


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The body of :func:`error_response` as a dict (for server-sent events)."""
    body: dict[str, Any] = json.loads(bytes(error_response(exc).body))
    return body


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (all with :class:`ErrorBody`)."""
    return {s: {"model": ErrorBody, "description": STATUS_TYPES[s].replace("_", " ")} for s in statuses}


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc) if loc else ""


def install_error_handlers(app: FastAPI) -> None:
    """Answer request validation errors (422), HTTP errors (their status), :class:`KnowrecError` (the table) and
    anything else (500) with the one error body."""

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        errors = list(exc.errors()) if isinstance(exc, RequestValidationError | ValidationError) else []
        first = errors[0] if errors else {}
        field = _loc(first.get("loc"))
        msg = str(first.get("msg", "invalid request"))
        if isinstance(exc, RequestValidationError) and first.get("type") == "missing" and field == "body":
            msg = "a JSON request body is required"
        detail = [{"loc": _loc(e.get("loc")), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
        return error(
            422, f"{field}: {msg}" if field else msg, field=field or None, errors=detail if len(detail) > 1 else None
        )

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 413:
            return error(413, str(exc.detail), field="body")
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # e.g. not UTF-8
            return error(422, "the body is not valid JSON (UTF-8)", field="body")
        resp = error(exc.status_code, str(exc.detail), field="method" if exc.status_code == 405 else None)
        for name, value in (exc.headers or {}).items():  # e.g. Allow on 405
            resp.headers[name] = value
        return resp

    async def any_error(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        RequestValidationError: validation,
        ValidationError: validation,
        HTTPException: http_error,
        KnowrecError: any_error,
        Exception: any_error,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
