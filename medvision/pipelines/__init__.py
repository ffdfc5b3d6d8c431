"""Pipelines: the contract, the registry and the built-in analyses."""

from medvision.pipelines._contract import (
    Acceptance,
    Pipeline,
    Progress,
    Selection,
    no_progress,
)
from medvision.pipelines._registry import available, get, register

__all__ = [
    "Acceptance",
    "Pipeline",
    "Progress",
    "Selection",
    "available",
    "get",
    "no_progress",
    "register",
]
