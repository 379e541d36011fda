"""The HTTP API: REST, an OpenAI-compatible chat endpoint and the web chat page (``knowrec serve``).

Needs the ``server`` extra (``pip install 'knowrec[server]'``): FastAPI and uvicorn.
"""

from __future__ import annotations

from knowrec.server.app import create_app

__all__ = ["create_app"]
