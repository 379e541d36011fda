"""Chat sessions: start one, send messages (optionally streamed as server-sent events), read its history."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from knowrec.server.deps import API, SETTINGS, call, chat_events, check_k
from knowrec.server.errors import error_payload, responses
from knowrec.server.schemas import MessageRequest, SessionCreate, SessionCreated, SessionHistory
from knowrec.types import ChatTurn

__all__ = ["router"]

router = APIRouter(tags=["chat"])


@router.post("/v1/sessions", response_model=SessionCreated, status_code=201, responses=responses(401, 503))
async def new_session(api: API, body: Annotated[SessionCreate | None, Body()] = None) -> SessionCreated:
    """Start a chat session (optionally for a known user, whose history then shapes the answers)."""
    sid = await call(api.new_session, body.user_id if body else None)
    return SessionCreated(session_id=sid)


@router.post(
    "/v1/sessions/{session_id}/messages",
    response_model=ChatTurn,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **responses(401, 404, 503),
    },
)
async def message(
    body: MessageRequest, api: API, settings: SETTINGS, session_id: str = PathParam(min_length=1, max_length=200)
) -> Any:
    """Send a user message; returns the assistant's turn (a question, an answer or recommendations).

    ``stream: true`` answers with server-sent events instead: ``progress`` (a ``ChatProgress``: the stage, and at
    ``ranking`` the picks in retrieval order with the answer's first line, before the LLM reranks them), then one
    ``turn`` (the ``ChatTurn``), or ``error`` (the error body) if the turn failed.
    """
    check_k(settings, body.k)
    if not body.stream:
        return await call(api.chat, session_id, body.message, user_id=body.user_id, k=body.k)

    async def events() -> AsyncIterator[str]:
        try:
            async for ev in chat_events(api, session_id, body.message, body.user_id, body.k):
                name = "turn" if isinstance(ev, ChatTurn) else "progress"
                yield f"event: {name}\ndata: {ev.model_dump_json()}\n\n"
        except Exception as exc:  # the status line is sent: the error is the stream's last event
            yield f"event: error\ndata: {json.dumps(error_payload(exc))}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/v1/sessions/{session_id}", response_model=SessionHistory, responses=responses(401, 404))
async def history(api: API, session_id: str = PathParam(min_length=1, max_length=200)) -> SessionHistory:
    """Every turn of a session, oldest first."""
    turns = await call(api.chat_history, session_id)
    return SessionHistory(session_id=session_id, turns=list(turns))
