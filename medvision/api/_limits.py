"""Request bodies larger than the node will ever need are refused before they are read.

Without a limit, anyone who can reach the port can make the node buffer a body of any size
(an unauthenticated 300 MiB POST to ``/login`` cost ~790 MiB of memory: form parsing reads
it all before authentication runs). :class:`BodyLimit` is plain ASGI middleware, outside
everything else, so it acts before routing, authentication or parsing:

- a ``Content-Length`` above the limit is answered 413 at once: not one byte of the body is
  read, and the server closes the connection;
- a body without ``Content-Length`` (``Transfer-Encoding: chunked``) is counted as the
  application reads it, and the read that passes the limit ends the request with 413;
- a ``Content-Length`` that is not a number is answered 400.

The limit is ``http_max_body_bytes`` (default 16 MiB; the API takes only JSON and form
fields). A route that ever needs more can be given its own, larger limit in ``per_path``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(HTTPException):
    """The body being read passed the limit.

    An ``HTTPException``, because FastAPI turns any other exception raised while it parses
    a body into "400 There was an error parsing the body"; this one it lets through, and
    the application's exception handler answers it with its own 413.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit), headers={"Connection": "close"})


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes`` (or a path's own limit)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        declared = _content_length(scope)
        if declared == -1:
            await _answer(send, 400, "Content-Length is not a number.")
            return
        if declared is not None and declared > limit:
            await _answer(send, 413, _too_large(limit))
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if started:  # the application answered before reading it all; nothing to add
                return
            await _answer(send, 413, _too_large(limit))


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when absent, -1 when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else -1
    return None


def _too_large(limit: int) -> str:
    return f"Request body too large: this node accepts at most {limit} bytes."


async def _answer(send: Send, status: int, detail: str) -> None:
    """A JSON error like FastAPI's, asking the server to close the connection (the body
    that was not read must not be taken for the next request)."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["BodyLimit"]
