"""What every route needs: the recommender behind the app, its settings, and SDK calls off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from knowrec.api import RecommenderAPI
from knowrec.config import Settings
from knowrec.errors import InvalidInput
from knowrec.types import ChatProgress, ChatTurn

__all__ = ["API", "SETTINGS", "call", "chat_events", "check_k", "get_api", "get_settings"]

T = TypeVar("T")


def get_api(request: Request) -> RecommenderAPI:
    """The recommender this app serves (a FastAPI dependency)."""
    api: RecommenderAPI = request.app.state.recommender
    return api


def get_settings(request: Request) -> Settings:
    """The app's settings (a FastAPI dependency)."""
    settings: Settings = request.app.state.settings
    return settings


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """An SDK call in a worker thread. Calls run concurrently: the in-process model runs one LLM call at a time (its
    client holds a lock around each), the stores serialise their own writes, so retrieval, a chat's first line and
    store-only calls (items, sessions, history, feedback) never wait for another request's LLM stage."""
    return await run_in_threadpool(fn, *args, **kwargs)


API = Annotated[RecommenderAPI, Depends(get_api)]
"""A route parameter receiving the app's recommender."""
SETTINGS = Annotated[Settings, Depends(get_settings)]
"""A route parameter receiving the app's settings."""


def check_k(settings: Settings, k: int | None) -> None:
    """Refuse a ``k`` above ``server.max_k`` (422 naming ``body.k``); ``None`` leaves it to the SDK's default."""
    if k is not None and k > settings.server.max_k:
        raise InvalidInput(f"k must be at most {settings.server.max_k}", field="body.k")


async def chat_events(
    api: RecommenderAPI, session_id: str, message: str, user_id: str | None, k: int | None
) -> AsyncIterator[ChatProgress | ChatTurn]:
    """One chat turn as it happens: each :class:`ChatProgress` as its stage starts, then the :class:`ChatTurn` (the
    SDK call runs in a worker thread; a failure is raised after the progress already sent)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[ChatProgress] = asyncio.Queue()

    def heard(event: ChatProgress) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    task = asyncio.ensure_future(call(api.chat, session_id, message, user_id=user_id, k=k, on_progress=heard))
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
