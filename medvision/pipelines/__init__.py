"""Pipelines: the contract, the registry and the built-in analyses."""

from medvision.pipelines._contract import (
    Acceptance,
    Pipeline,
    PipelineBase,
    Progress,
    Selection,
    no_progress,
    select_series,
)
from medvision.pipelines._registry import available, get, identity, register

__all__ = [
    "Acceptance",
    "Pipeline",
    "PipelineBase",
    "Progress",
    "Selection",
    "available",
    "get",
    "identity",
    "no_progress",
    "register",
    "select_series",
]
