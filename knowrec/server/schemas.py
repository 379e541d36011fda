"""Request and response bodies of the HTTP API (pydantic; they make up the OpenAPI schema at ``/openapi.json``).

SDK results (:class:`~knowrec.types.Recommendation`, :class:`~knowrec.types.ChatTurn`, :class:`~knowrec.types.Item`,
:class:`~knowrec.types.Fact`) are returned as they are; only the envelopes are defined here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from knowrec.types import ChatTurn, Fact, Item, Recommendation

__all__ = [
    "ChatCompletion",
    "ChatCompletionChoice",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionMessage",
    "CompletionUsage",
    "ErrorBody",
    "ErrorDetail",
    "FeedbackRequest",
    "FeedbackResponse",
    "Health",
    "ItemResponse",
    "KnowrecExtra",
    "MessageRequest",
    "ModelCard",
    "ModelList",
    "Readiness",
    "RecommendationRequest",
    "SessionCreate",
    "SessionCreated",
    "SessionHistory",
]

MODEL_NAME = "knowrec"
"""The one model name ``/v1/models`` lists and ``/v1/chat/completions`` answers as."""

Id = Field(min_length=1, max_length=200)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- errors --------------------------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    type: str
    """``invalid_request``, ``unauthorized``, ``not_found``, ``payload_too_large``, ``unavailable``, …"""
    message: str
    field: str | None = None
    """Where the problem is, as a dotted path: ``body.k``, ``path.item_id``, ``header.x-api-key``."""
    errors: list[dict[str, Any]] | None = None
    """Every validation problem (``loc``, ``msg``, ``type``) when there was more than one."""


class ErrorBody(BaseModel):
    """Every error the API returns has this shape (OpenAI-compatible: an ``error`` object with a ``message``)."""

    error: ErrorDetail


# -- REST ----------------------------------------------------------------------------------------------------------
class RecommendationRequest(_Request):
    user_id: str | None = Field(default=None, max_length=200)
    """Unknown users (or none) get the cold-start path."""
    k: int = Field(default=10, ge=1, le=200)
    """How many items; at most ``server.max_k`` (default 100)."""
    query: str | None = Field(default=None, max_length=2000)
    diversity: float = Field(default=0.3, ge=0.0, le=1.0)
    exclude: list[str] = Field(default_factory=list, max_length=1000)
    mode: Literal["verbalizer", "listwise", "pointwise", "none"] | None = None
    """Override the configured ranking mode; the LLM modes need an LLM backend."""


class SessionCreate(_Request):
    user_id: str | None = Field(default=None, max_length=200)


class SessionCreated(BaseModel):
    session_id: str


class MessageRequest(_Request):
    message: str = Field(min_length=1, max_length=4000)
    user_id: str | None = Field(default=None, max_length=200)
    k: int | None = Field(default=None, ge=1, le=200)
    """How many items to recommend; default: the settings' ``chat.k``."""
    stream: bool = False
    """Answer with server-sent events: ``progress`` while the turn runs, then ``turn`` (or ``error``)."""


class SessionHistory(BaseModel):
    session_id: str
    turns: list[ChatTurn]


class FeedbackRequest(_Request):
    item_id: str = Id
    liked: bool
    session_id: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, max_length=200)


class FeedbackResponse(BaseModel):
    ok: bool = True
    item_id: str
    liked: bool


class ItemResponse(BaseModel):
    item: Item
    facts: list[Fact]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    components: dict[str, str] = Field(default_factory=dict)
    error: ErrorDetail | None = None


# -- OpenAI-compatible ---------------------------------------------------------------------------------------------
class ChatMessage(BaseModel):
    """An OpenAI chat message; ``content`` may be a string or a list of ``{"type": "text", "text": …}`` parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return ""


class ChatCompletionRequest(BaseModel):
    """The OpenAI ``/v1/chat/completions`` request. Unsupported sampling fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = MODEL_NAME
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    user: str | None = Field(default=None, max_length=200)
    """The end user; the same value continues the same chat session (``X-Session-Id`` takes precedence)."""
    k: int | None = Field(default=None, ge=1, le=200)
    """knowrec extra: how many items to recommend; default: the settings' ``chat.k``."""


class CompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: CompletionMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class KnowrecExtra(BaseModel):
    """What knowrec adds to an OpenAI answer: the session to continue and the recommended item ids."""

    session_id: str
    action: str
    items: list[str]
    recommendation: Recommendation | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = MODEL_NAME
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage
    knowrec: KnowrecExtra


class ModelCard(BaseModel):
    id: str = MODEL_NAME
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "knowrec"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
