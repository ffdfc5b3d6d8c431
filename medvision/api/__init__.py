"""The REST API (FastAPI): studies, jobs, findings, results, feedback, audit, metrics, admin,
and the browser session routes (``/login``, ``/logout``).

``api_router`` is mounted by ``medvision.server.create_app``; ``BodyLimit`` is the request
body limit the server puts around the whole app. Authentication is ``medvision.auth`` (the
rules) and ``medvision.http_deps`` (the request dependencies shared with the web pages).
"""

from medvision.api._limits import BodyLimit
from medvision.api._router import router as api_router

__all__ = ["BodyLimit", "api_router"]
