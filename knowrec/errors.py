"""Exceptions raised by knowrec. Everything derives from :class:`KnowrecError`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "InvalidInput",
    "InvalidSetting",
    "KnowrecError",
    "LLMError",
    "NotFound",
    "StoreUnavailable",
]


class KnowrecError(Exception):
    """Root of every error knowrec raises on purpose."""


class ConfigError(KnowrecError):
    """Settings are inconsistent or name something that does not exist."""


class InvalidSetting(ConfigError, ValueError):
    """A setting has a value it cannot take (from arguments, the environment or a settings file). ``field`` is its
    dotted name; ``errors`` every problem found, as pydantic lists them.

    Example:
        >>> from knowrec.config import Settings
        >>> try:
        ...     Settings(ranker={"mode": "sideways"})
        ... except InvalidSetting as e:
        ...     print(e.field)
        ranker.mode
    """

    def __init__(self, message: str, *, field: str | None = None, errors: list[dict[str, Any]] | None = None) -> None:
        self.field = field
        self.errors = errors or []
        super().__init__(message)

    @classmethod
    def from_validation(cls, exc: Any, prefix: str = "") -> InvalidSetting:
        """From a pydantic ``ValidationError``: the first problem named, the number of others."""
        errors = [dict(e) for e in exc.errors()]
        first = errors[0] if errors else {}
        field = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(first.get("loc", ())))
        msg = str(first.get("msg", exc))
        if "input" in first and first.get("type") != "missing" and not isinstance(first["input"], dict):
            msg += f" (got {first['input']!r})"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return cls(f"invalid setting {field}: {msg}{more}", field=field or None, errors=errors)


class InvalidInput(KnowrecError):
    """Input data is malformed. Names the file, the line and (where known) the field.

    Example:
        >>> str(InvalidInput("rating is not a number", path="ratings.csv", line=3, field="rating"))
        'ratings.csv:3: field rating: rating is not a number'
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        elif line is not None:
            where = f"line {line}: "
        if field is not None:
            where += f"field {field}: "
        super().__init__(f"{where}{message}")


class StoreUnavailable(KnowrecError):
    """A graph or vector store cannot be reached or opened."""


class NotFound(KnowrecError):
    """A requested item, user or session does not exist."""


class LLMError(KnowrecError):
    """The LLM failed to answer. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)
