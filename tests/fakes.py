"""Small hand-written fakes for unit tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from knowrec.agent.llm.base import LLMReply, Message
from knowrec.errors import LLMError
from knowrec.testing import HashEmbedder  # noqa: F401  (re-exported: the tests import it from here)


class FakeLLM:
    """Scripted LLM: ``chat`` returns queued texts; ``label_logprobs`` returns given scores (default: reversed)."""

    def __init__(self, replies: Sequence[str] = (), logprobs: dict[str, float] | None = None, fail: bool = False):
        self.replies = list(replies)
        self.logprobs = logprobs
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    @property
    def model_id(self) -> str:
        return "fake-llm"

    def chat(
        self, messages: Sequence[Message], schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> LLMReply:
        self.calls.append({"kind": "chat", "messages": list(messages), "schema": schema})
        if self.fail:
            raise LLMError("scripted failure", retryable=True)
        text = self.replies.pop(0) if self.replies else "{}"
        try:
            parsed = json.loads(text) if schema is not None else None
        except json.JSONDecodeError as exc:
            raise LLMError(f"not JSON: {text!r}") from exc
        return LLMReply(text=text, parsed=parsed, usage={"prompt_tokens": 10, "completion_tokens": 5}, model="fake-llm")

    def format_chat(self, messages: Sequence[Message], assistant_prefix: str = "") -> str:
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant: " + assistant_prefix

    def label_logprobs(self, prompt: str, labels: Sequence[str]) -> dict[str, float]:
        self.calls.append({"kind": "logprobs", "prompt": prompt, "labels": list(labels)})
        if self.fail:
            raise LLMError("scripted failure", retryable=True)
        if self.logprobs is not None:
            return {lab: self.logprobs.get(lab, float("-inf")) for lab in labels}
        n = len(labels)
        return {lab: -float(n - i) for i, lab in enumerate(labels)}  # prefers the last label
