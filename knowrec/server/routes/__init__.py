"""The API's routers, one per concern; :func:`knowrec.server.create_app` includes them all."""

from knowrec.server.routes.chat import router as chat
from knowrec.server.routes.openai import router as openai
from knowrec.server.routes.probes import router as probes
from knowrec.server.routes.rest import router as rest
from knowrec.server.routes.web import router as web

__all__ = ["ROUTERS", "chat", "openai", "probes", "rest", "web"]

ROUTERS = (probes, rest, chat, openai, web)
"""Every router, in the order the app includes them."""
