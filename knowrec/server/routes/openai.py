"""OpenAI-compatible chat: ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain or streamed)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse

from knowrec.errors import InvalidInput
from knowrec.server.deps import API, SETTINGS, call, chat_events, check_k
from knowrec.server.errors import error_payload, responses
from knowrec.server.schemas import (
    MODEL_NAME,
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionRequest,
    CompletionMessage,
    CompletionUsage,
    KnowrecExtra,
    ModelCard,
    ModelList,
)
from knowrec.types import ChatProgress, ChatTurn

__all__ = ["router"]

router = APIRouter(tags=["openai"])

_STARTED = int(time.time())


@router.get("/v1/models", response_model=ModelList)
async def models() -> ModelList:
    """The one model this server answers as: ``knowrec``."""
    return ModelList(data=[ModelCard(created=_STARTED)])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **responses(401, 404, 503),
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    api: API,
    settings: SETTINGS,
    x_session_id: str | None = Header(default=None, max_length=200),
    x_user_id: str | None = Header(default=None, max_length=200),
) -> Any:
    """OpenAI-compatible chat: the last user message goes to the chat agent.

    The session is ``X-Session-Id`` if sent, else derived from ``user``, else a new one; it is returned in the
    ``X-Session-Id`` response header and in ``knowrec.session_id``. ``X-User-Id`` names a known user whose history
    shapes the answers. ``stream: true`` answers with ``chat.completion.chunk`` server-sent events.
    """
    check_k(settings, body.k)
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
        sid = await call(api.new_session, x_user_id)
    cid = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            _sse(cid, created, text, chat_events(api, sid, text, x_user_id, body.k)),
            media_type="text/event-stream",
            headers={"X-Session-Id": sid, "Cache-Control": "no-cache"},
        )
    turn = await call(api.chat, sid, text, user_id=x_user_id, k=body.k)
    extra, usage = _completion_extra(text, turn)
    completion = ChatCompletion(
        id=cid,
        created=created,
        choices=[ChatCompletionChoice(message=CompletionMessage(content=turn.text))],
        usage=usage,
        knowrec=extra,
    )
    return JSONResponse(completion.model_dump(mode="json"), headers={"X-Session-Id": turn.session_id})


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
        yield f"data: {json.dumps(error_payload(exc))}\n\n"
    yield "data: [DONE]\n\n"
