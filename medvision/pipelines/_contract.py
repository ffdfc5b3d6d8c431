"""The contract every pipeline fulfils, whether hand-written or a MONAI bundle.

Callers (``medvision run`` and, later, the node's worker) only ever use this interface:
ask each registered pipeline whether it accepts a series, load the accepted series as a
:class:`~medvision.dicom.Volume`, call :meth:`Pipeline.run`, and hand the returned
:class:`~medvision.findings.Findings` to the result writers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from medvision.dicom import SeriesInfo, Volume
from medvision.findings import Findings, Label

#: Called with (stage name, fraction done in [0, 1]); a CLI draws a progress bar from it.
Progress = Callable[[str, float], None]


def no_progress(stage: str, fraction: float) -> None:
    """The default progress callback: ignore."""


@dataclass(frozen=True)
class Acceptance:
    """Whether a pipeline takes a series, and why not (shown to the user and audited)."""

    accepted: bool
    reason: str = ""
    #: Higher is better when several series of a study are accepted (e.g. thinner slices).
    score: float = 0.0

    def __bool__(self) -> bool:
        return self.accepted


class Pipeline(ABC):
    """A named, versioned analysis of one series."""

    #: Registry key, e.g. "lung-ct".
    name: str
    version: str
    description: str = ""

    @property
    @abstractmethod
    def labels(self) -> tuple[Label, ...]:
        """Every label this pipeline may produce (SEG segment descriptions come from here)."""

    @abstractmethod
    def accepts(self, series: SeriesInfo) -> Acceptance:
        """Decide from headers alone whether this pipeline can analyse ``series``."""

    @abstractmethod
    def run(self, volume: Volume, progress: Progress = no_progress) -> Findings:
        """Analyse one volume; raise :class:`medvision.errors.PipelineError` on failure."""

    def choose(self, series: list[SeriesInfo] | tuple[SeriesInfo, ...]) -> SeriesInfo | None:
        """The best accepted series of a study, or None when none is accepted."""
        scored = [(self.accepts(s), s) for s in series]
        accepted = [(a.score, i, s) for i, (a, s) in enumerate(scored) if a]
        if not accepted:
            return None
        return max(accepted, key=lambda t: (t[0], -t[1]))[2]


__all__ = ["Acceptance", "Pipeline", "Progress", "no_progress"]
