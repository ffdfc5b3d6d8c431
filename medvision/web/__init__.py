"""The node's web pages: sign-in, study list, slice viewer with feedback, QA dashboard and
reports. Server-rendered HTML, PNG slices and overlays, SVG charts and a little plain
JavaScript, all served by the node itself (no CDN, no build step). See docs/reading.md and
docs/reviewing.md.

Mounted beside the API by :func:`medvision.server.create_app`; the pages share the API's
authentication and audited reads through ``medvision.http_deps``, and import nothing from
``medvision.api``.
"""

from fastapi import APIRouter

from medvision.web._qa import router as _qa
from medvision.web._viewer import router as _viewer

web_router = APIRouter(include_in_schema=False)
web_router.include_router(_viewer)
web_router.include_router(_qa)

__all__ = ["web_router"]
