"""The LLM client protocol every backend implements."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from knowrec.errors import LLMError

__all__ = ["LLMClient", "LLMReply", "Message", "adapter_name", "logsumexp", "parse_json_answer"]

Message = dict[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


class LLMReply(BaseModel):
    """One answer of the LLM. ``parsed`` is the decoded JSON when a schema was requested."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    parsed: Any = None
    usage: dict[str, int] = Field(default_factory=dict)
    latency_ms: float = 0.0
    model: str = ""


@runtime_checkable
class LLMClient(Protocol):
    """What the rankers and the explainer need from an LLM."""

    @property
    def model_id(self) -> str:
        """Names the model (and adapter, if any) that answers; recorded in every result."""
        ...

    def chat(
        self, messages: Sequence[Message], schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> LLMReply:
        """Greedy chat completion; with ``schema`` the answer is constrained to that JSON schema and parsed.

        Raises:
            LLMError: the model failed or returned something unusable (``retryable`` says whether to retry).
        """
        ...

    def format_chat(self, messages: Sequence[Message], assistant_prefix: str = "") -> str:
        """The raw prompt text the model sees for ``messages``, ending inside the assistant's turn."""
        ...

    def label_logprobs(self, prompt: str, labels: Sequence[str]) -> dict[str, float]:
        """Log-probability of each label as the next token after the raw ``prompt`` (one forward pass).

        Every label must be a single token of the model's vocabulary.
        """
        ...


def adapter_name(path: Path) -> str:
    """How results name a LoRA adapter: the ``knowrec tune`` output folder holding it (``…/movies/adapter`` or
    ``…/movies/adapter.gguf`` → ``movies``), else its own file or folder name."""
    return path.parent.name if path.name in ("adapter", "adapter.gguf") else path.stem


def parse_json_answer(text: str, retryable: bool) -> Any:
    """The JSON of an answer generated under a schema; :class:`LLMError` naming the problem when it is not JSON (a
    grammar keeps the output valid unless ``max_tokens`` cut it short)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LLMError(f"LLM answer is not valid JSON ({exc.msg}): {text[:200]!r}", retryable=retryable) from exc


def logsumexp(values: Sequence[float]) -> float:
    """``log(sum(exp(v)))`` without overflow; ``-inf`` when every value is ``-inf`` (log-probabilities of labels)."""
    top = max(values)
    if math.isinf(top):
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))
