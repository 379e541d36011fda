"""The public surface every front end takes: :class:`RecommenderAPI`.

The HTTP server (:func:`knowrec.server.create_app`), the CLI's serving commands and the LangChain layer
(:mod:`knowrec.integrations.langchain`) call a recommender only through this protocol, never through the concrete
:class:`~knowrec.Recommender`'s stores or private parts, so any object with these methods can stand behind them
(a remote client, a fake in tests). Administrative work — ingest, fit, tune, extract — stays on
:class:`~knowrec.Recommender` itself.

Example:
    >>> from knowrec import Recommender, Settings
    >>> from knowrec.api import RecommenderAPI
    >>> isinstance(Recommender(Settings(data_dir="/tmp/knowrec-api-doc")), RecommenderAPI)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

from knowrec.config import Settings
from knowrec.types import ChatProgress, ChatTurn, Item, ItemDetails, Recommendation, SessionProfile

__all__ = ["RankingMode", "RecommenderAPI"]

RankingMode = Literal["verbalizer", "listwise", "pointwise", "none"]


@runtime_checkable
class RecommenderAPI(Protocol):
    """What the server, the CLI and the LangChain layer need from a recommender.

    Errors are :class:`~knowrec.errors.KnowrecError` subclasses: ``NotFound`` (unknown item, user or session),
    ``InvalidInput`` (bad arguments), ``StoreUnavailable``, ``LLMError``, ``ConfigError``.
    """

    settings: Settings

    def recommend(
        self,
        user_id: str | int | None,
        k: int = 10,
        query: str | None = None,
        diversity: float = 0.3,
        *,
        exclude: list[str] | None = None,
        candidates: list[str] | None = None,
        mode: RankingMode | None = None,
        on_retrieved: Callable[[Recommendation], None] | None = None,
    ) -> Recommendation:
        """``k`` items for a user (or a cold-start query), each with reasons that cite stored facts."""
        ...

    def similar(self, item_id: str | int, k: int = 10) -> list[tuple[Item, float]]:
        """The items most similar to ``item_id`` by embedding, as ``(item, cosine)``."""
        ...

    def search(self, query: str, k: int = 10) -> list[tuple[Item, float]]:
        """The items whose text best matches ``query`` by embedding, as ``(item, cosine)``."""
        ...

    def item(self, item_id: str | int, *, facts: int = 50) -> ItemDetails:
        """One item and up to ``facts`` of its facts, most informative first."""
        ...

    def new_session(self, user_id: str | None = None) -> str:
        """Start a chat session; returns its id."""
        ...

    def chat(
        self,
        session_id: str,
        message: str,
        *,
        user_id: str | None = None,
        k: int | None = None,
        on_progress: Callable[[ChatProgress], None] | None = None,
    ) -> ChatTurn:
        """Answer one chat message."""
        ...

    def chat_history(self, session_id: str) -> list[ChatTurn]:
        """Every turn of a session, oldest first."""
        ...

    def session_profile(self, session_id: str) -> SessionProfile:
        """What the session has learnt (liked and disliked items, constraints), in words too."""
        ...

    def feedback(self, item_id: str, liked: bool, *, session_id: str | None = None, user_id: str | None = None) -> None:
        """Record a like or dislike (a stored interaction; with a session, its profile)."""
        ...

    def verify(self) -> dict[str, str]:
        """Check every store and the LLM can be reached; returns what each component is."""
        ...

    def stats(self) -> dict[str, int]:
        """Stored counts: items, facts, entities, users, interactions."""
        ...

    def info(self) -> dict[str, Any]:
        """Counts, fitted models and the effective settings."""
        ...

    def close(self) -> None:
        """Release what the recommender opened. Safe to call twice."""
        ...
