"""Reads of patient data: who read which study through which route (``api.read``).

One dependency, ``ReaderDep``, for every route that shows a study's data: the API's JSON
and file routes declare it, and the web pages build the same :class:`Reader` through
``get_reader`` once their sign-in guard has let the user in (a page sends a stranger to the
sign-in form instead of answering 401, so it cannot let the dependency raise). Either way
the audit event is the same, written in one place (AUD-02, GDPR access control on patient
data).

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from medvision.audit import DbAuditLog
from medvision.auth import CurrentUser
from medvision.http_deps._credentials import CurrentUserDep
from medvision.http_deps._state import AuditDep, client_host


@dataclass(frozen=True, slots=True)
class Reader:
    """The signed-in caller of a route that shows patient data, and the audit of its reads."""

    user: CurrentUser
    request: Request
    audit: DbAuditLog

    def record(self, study_uid: str | None, **fields: object) -> None:
        """``api.read``: this user read ``study_uid``'s data through this route.

        Recorded once the data is found, so a 404 leaves no read behind. The route template
        is recorded, not the URL, so no query string or free text reaches the audit trail.
        A page records one event per page, not per slice image: the slices are what that
        page shows, and an event per scroll step would bury the trail.
        """
        request = self.request
        route = request.scope.get("route")
        self.audit.record(
            "api.read",
            study_instance_uid=study_uid,
            user=self.user.name,
            route=f"{request.method} {getattr(route, 'path', request.url.path)}",
            client_host=client_host(request),
            **fields,
        )


def get_reader(request: Request, user: CurrentUserDep, audit: AuditDep) -> Reader:
    """The current user (authenticated once per request) with the audit log of their reads."""
    return Reader(user=user, request=request, audit=audit)


ReaderDep = Annotated[Reader, Depends(get_reader)]

__all__ = ["Reader", "ReaderDep", "get_reader"]
