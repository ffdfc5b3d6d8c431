"""The contract every pipeline fulfils, whether hand-written or a MONAI bundle.

Callers (``medvision run``, the node's job worker, ``evaluate``) only ever use this
interface: ask each registered pipeline whether it accepts a series, load the accepted
series as a :class:`~medvision.dicom.Volume`, call :meth:`Pipeline.run`, and hand the
returned :class:`~medvision.findings.Findings` to the result writers.

:class:`Pipeline` is a :class:`~typing.Protocol`: anything with these members is a
pipeline, so a model family can be added without inheriting from medvision. The built-in
ones share the one series-selection rule by deriving from :class:`PipelineBase`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from medvision.dicom import SeriesInfo, Volume
from medvision.findings import Findings, Label

#: Called with (stage name, fraction done in [0, 1]); a CLI draws a progress bar from it.
Progress = Callable[[str, float], None]


def no_progress(stage: str, fraction: float) -> None:
    """The default progress callback: ignore."""


@dataclass(frozen=True)
class Acceptance:
    """Whether a pipeline takes a series, and why not (shown to the user and audited).

    A series that is not taken is either *refused* (the pipeline is for this kind of series
    but cannot read this one: bad geometry, too few slices, slices too thick) or *not
    applicable* (the pipeline is not for it at all: another modality or body part, a scout).
    Only a refusal is an error a user must see; a study whose series are all out of a
    pipeline's scope simply does not concern that pipeline.
    """

    accepted: bool
    #: The rule that ruled the series out, in plain words without the pipeline's name,
    #: e.g. "modality is MR, not CT"; empty or a short summary when accepted.
    reason: str = ""
    #: Higher is better when several series of a study are accepted (e.g. thinner slices).
    score: float = 0.0
    #: False when the series lies outside the pipeline's scope (see the class docstring).
    applicable: bool = True

    def __post_init__(self) -> None:
        if self.accepted and not self.applicable:
            raise ValueError("An accepted series cannot be 'not applicable'.")

    @classmethod
    def refused(cls, reason: str) -> Acceptance:
        """The pipeline is for such series but cannot analyse this one."""
        return cls(False, reason)

    @classmethod
    def not_applicable(cls, reason: str) -> Acceptance:
        """The series is outside what the pipeline is for (modality, body part, scout)."""
        return cls(False, reason, applicable=False)

    def __bool__(self) -> bool:
        return self.accepted


@dataclass(frozen=True)
class Selection:
    """What one pipeline makes of a whole study: the series it takes, or why none.

    The runner (``medvision run``, the worker) and the node's assembler both decide from
    this one object, so a study is explained in the same words offline and in the node.
    """

    pipeline: str
    #: Every series of the study with the pipeline's verdict on it, in study order.
    decisions: tuple[tuple[SeriesInfo, Acceptance], ...]
    chosen: SeriesInfo | None = None

    @property
    def applicable(self) -> bool:
        """True when at least one series is within the pipeline's scope."""
        return any(a.applicable for _, a in self.decisions)

    @property
    def reason(self) -> str:
        """One line: why no series was taken ("" when one was).

        A refusal lists only the series the pipeline is for (the irrelevant "modality MR"
        series of a mixed study stay out of it); "does not apply" names each rule that
        ruled the study out, with the series it ruled out.
        """
        if self.chosen is not None:
            return ""
        if self.applicable:
            why = "; ".join(
                f"{_series_name(s)}: {a.reason}" for s, a in self.decisions if a.applicable
            )
            return f"{self.pipeline} refused the study: {why}"
        if not self.decisions:
            return f"{self.pipeline} does not apply: the study holds no series"
        by_rule: dict[str, list[str]] = {}
        for s, a in self.decisions:
            by_rule.setdefault(a.reason, []).append(_series_name(s))
        why = "; ".join(f"{rule} ({', '.join(names)})" for rule, names in by_rule.items())
        return f"{self.pipeline} does not apply: {why}"


def _series_name(series: SeriesInfo) -> str:
    number = series.series_number if series.series_number is not None else "?"
    return f"series {number} ({series.modality or 'no modality'})"


class Pipeline(Protocol):
    """A named, versioned analysis of one series: what every caller relies on."""

    #: Registry key, e.g. "lung-ct".
    name: str
    version: str
    description: str

    @property
    def labels(self) -> tuple[Label, ...]:
        """Every label this pipeline may produce (SEG segment descriptions come from here)."""
        ...

    def accepts(self, series: SeriesInfo) -> Acceptance:
        """Decide from headers alone whether this pipeline can analyse ``series``."""
        ...

    def run(self, volume: Volume, progress: Progress = no_progress) -> Findings:
        """Analyse one volume; raise :class:`medvision.errors.PipelineError` on failure."""
        ...

    def choose(self, series: Sequence[SeriesInfo]) -> SeriesInfo | None:
        """The best accepted series of a study, or None when none is accepted."""
        ...

    def select(self, series: Sequence[SeriesInfo]) -> Selection:
        """Judge every series of a study; the best accepted one is ``chosen``."""
        ...


def select_series(pipeline: Pipeline, series: Sequence[SeriesInfo]) -> Selection:
    """The one selection rule: the accepted series with the highest score, the first of
    equals in study order; every decision kept so a refusal can name its rules."""
    decisions = tuple((s, pipeline.accepts(s)) for s in series)
    accepted = [(a.score, i, s) for i, (s, a) in enumerate(decisions) if a]
    chosen = max(accepted, key=lambda t: (t[0], -t[1]))[2] if accepted else None
    return Selection(pipeline.name, decisions, chosen)


class PipelineBase(ABC):
    """The built-in pipelines' common base: the members to write, and the selection rule."""

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

    def choose(self, series: Sequence[SeriesInfo]) -> SeriesInfo | None:
        """The best accepted series of a study, or None when none is accepted."""
        return self.select(series).chosen

    def select(self, series: Sequence[SeriesInfo]) -> Selection:
        """Judge every series of a study; the best accepted one is ``chosen``."""
        return select_series(self, series)


__all__ = [
    "Acceptance",
    "Pipeline",
    "PipelineBase",
    "Progress",
    "Selection",
    "no_progress",
    "select_series",
]
