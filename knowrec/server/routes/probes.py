"""``/healthz`` (liveness) and ``/readyz`` (readiness)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from knowrec.server.deps import API, call
from knowrec.server.errors import error_status
from knowrec.server.schemas import Health, Readiness

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers (no I/O)."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(api: API) -> Any:
    """Readiness: every store and the LLM can be reached (``verify``); 503 says which cannot."""
    try:
        report = await call(api.verify)
    except Exception as exc:  # any failure means "not ready", with the reason
        kind = error_status(exc)[1]
        log.warning("not ready: %s", exc)
        body = Readiness(status="unavailable", error={"type": kind, "message": str(exc) or kind})
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    return Readiness(status="ready", components=report)
