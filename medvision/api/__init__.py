"""The REST API (FastAPI)."""

from medvision.api._app import create_app

__all__ = ["create_app"]
