"""REST: recommendations, items and feedback."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from knowrec.errors import InvalidInput
from knowrec.server.deps import API, SETTINGS, call, check_k
from knowrec.server.errors import responses
from knowrec.server.schemas import FeedbackRequest, FeedbackResponse, ItemResponse, RecommendationRequest
from knowrec.types import Recommendation

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/v1/recommendations", response_model=Recommendation, tags=["recommend"], responses=responses(401, 404, 503)
)
async def recommendations(body: RecommendationRequest, api: API, settings: SETTINGS) -> Recommendation:
    """Recommend ``k`` items for a user (or a cold-start query), each with reasons citing KG facts."""
    check_k(settings, body.k)
    mode = body.mode
    if mode not in (None, "none") and settings.llm.backend == "none":
        raise InvalidInput(f"ranking mode {mode!r} needs an LLM, and this server has none", field="body.mode")
    return await call(
        api.recommend,
        body.user_id,
        k=body.k,
        query=body.query,
        diversity=body.diversity,
        exclude=list(body.exclude),
        mode=mode,
    )


@router.get("/v1/items/{item_id}", response_model=ItemResponse, tags=["items"], responses=responses(401, 404, 503))
async def item(
    api: API,
    item_id: str = PathParam(min_length=1, max_length=200),
    facts: int = Query(default=50, ge=0, le=500, description="How many of its facts (most informative first)."),
) -> ItemResponse:
    """One item and its knowledge-graph facts."""
    found = await call(api.item, item_id, facts=facts)
    return ItemResponse(item=found.item, facts=list(found.facts))


@router.post("/v1/feedback", response_model=FeedbackResponse, tags=["chat"], responses=responses(401, 404, 503))
async def feedback(body: FeedbackRequest, api: API) -> FeedbackResponse:
    """Like or dislike an item; it is stored and changes the next answer of the session / user."""
    if not body.session_id and not body.user_id:
        raise InvalidInput("feedback needs a session_id or a user_id", field="body.session_id")
    await call(api.feedback, body.item_id, body.liked, session_id=body.session_id, user_id=body.user_id)
    return FeedbackResponse(item_id=body.item_id, liked=body.liked)
