"""``pipeline.yaml``: what a MONAI bundle needs to become a medvision pipeline.

A MONAI bundle says how to compute (pre-processing, network, post-processing); it does not
say which DICOM series it may be given, what its labels mean in SNOMED CT, or what to
tell a reader about the input. ``pipeline.yaml`` adds exactly that, and nothing that the
bundle already says. It is read here, without importing torch or MONAI, so that listing
pipelines stays cheap. Every rule is checked when the file is read, and an error names the
file, the field and the value (see docs/models.md for the format and an example).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medvision.findings import Code, FindingKind, Label

#: ``pipeline.yaml`` files shipped with medvision for known MONAI Model Zoo bundles, so that
#: a zoo bundle dropped into ``models/`` runs with no file added (keyed by folder name).
ZOO_SPECS = Path(__file__).resolve().parent / "zoo"


class SpecError(ValueError):
    """``pipeline.yaml`` is missing a field or holds a value outside its rules."""


@dataclass(frozen=True)
class InputSpec:
    """One input series of the bundle: which series may fill it (headers only)."""

    key: str
    modality: str
    body_parts: tuple[str, ...] = ()
    orientations: tuple[str, ...] = ()
    min_slices: int = 1
    max_slice_thickness_mm: float | None = None
    #: Regular expression the SeriesDescription must match (case-insensitive), if given.
    series_description: str | None = None


@dataclass(frozen=True)
class LabelSpec:
    """One value of the bundle's label map and what it means."""

    value: int
    label: Label
    #: Output probability channel that holds this label's probability (default: value).
    channel: int


@dataclass(frozen=True)
class IntendedUse:
    """What the input should look like; departures become quality flags, not refusals."""

    #: Expected range of the 1st..99th intensity percentiles of the input.
    intensity_range: tuple[float, float] | None = None
    #: Smallest and largest field of view (mm, largest extent of the volume).
    fov_mm: tuple[float, float] | None = None


@dataclass(frozen=True)
class ExplainSpec:
    """Explainability settings: test-time augmentation for the uncertainty estimate."""

    #: Extra forward passes with flipped input (0 = no uncertainty estimate).
    tta_passes: int = 1
    #: Spatial axes (of the network input, 0..2) flipped in turn, one per extra pass.
    flip_axes: tuple[int, ...] = (0, 1, 2)
    #: Mean uncertainty inside a segment above which a quality flag is raised.
    flag_uncertainty_above: float = 0.2


@dataclass(frozen=True)
class PipelineSpec:
    """The parsed ``pipeline.yaml`` of one bundle."""

    name: str
    version: str | None
    description: str
    inputs: tuple[InputSpec, ...]
    labels: tuple[LabelSpec, ...]
    intended_use: IntendedUse = IntendedUse()
    explain: ExplainSpec = ExplainSpec()
    #: Smallest segment kept, in mL (smaller connected lesions / organs are dropped).
    min_volume_ml: float = 0.0
    #: Model card (path relative to the bundle folder), shown by ``medvision models list``.
    model_card: str | None = None
    #: Run with randomly initialised weights when the bundle has none (tests, demos only).
    allow_untrained: bool = False
    #: ConfigParser id -> value, applied to ``inference.json`` after reading it.
    overrides: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @property
    def reference(self) -> InputSpec:
        """The input whose grid the output lies on and whose images the SEG references."""
        return self.inputs[0]


def _code(raw: Any, where: str) -> Code:
    if not isinstance(raw, dict) or not {"value", "scheme", "meaning"} <= set(raw):
        raise SpecError(f"{where} must be a mapping with value, scheme and meaning, got {raw!r}.")
    return Code(str(raw["value"]), str(raw["scheme"]), str(raw["meaning"]))


def _pair(raw: Any, where: str) -> tuple[float, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, list | tuple) or len(raw) != 2 or float(raw[0]) > float(raw[1]):
        raise SpecError(f"{where} must be [low, high] with low <= high, got {raw!r}.")
    return float(raw[0]), float(raw[1])


def _strings(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else list(raw)
    return tuple(str(s).upper() for s in items)


def _input(raw: Any, n: int, where: str) -> InputSpec:
    if not isinstance(raw, dict) or "modality" not in raw:
        raise SpecError(f"{where}: inputs[{n}] needs at least 'modality', got {raw!r}.")
    description = raw.get("series_description")
    if description is not None:
        try:
            re.compile(str(description))
        except re.error as exc:
            raise SpecError(f"{where}: inputs[{n}].series_description: {exc}.") from None
    thickness = raw.get("max_slice_thickness_mm")
    return InputSpec(
        key=str(raw.get("key", f"input{n}")),
        modality=str(raw["modality"]).upper(),
        body_parts=_strings(raw.get("body_parts")),
        orientations=_strings(raw.get("orientations")),
        min_slices=int(raw.get("min_slices", 1)),
        max_slice_thickness_mm=None if thickness is None else float(thickness),
        series_description=None if description is None else str(description),
    )


def _label(value: Any, raw: Any, where: str) -> LabelSpec:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: label key must be an integer, got {value!r}.") from None
    if number < 1:
        raise SpecError(f"{where}: label {number}: values start at 1 (0 is background).")
    if not isinstance(raw, dict) or "name" not in raw:
        raise SpecError(f"{where}: label {number} needs a name, got {raw!r}.")
    try:
        kind = FindingKind(str(raw.get("kind", "organ")).lower())
    except ValueError:
        raise SpecError(
            f"{where}: label {number}: kind must be 'organ' or 'lesion', got {raw.get('kind')!r}."
        ) from None
    site = raw.get("site")
    cielab = raw.get("cielab")
    laterality = raw.get("laterality")
    label = Label(
        name=str(raw["name"]),
        category=_code(raw.get("category"), f"{where}: label {number}.category"),
        type=_code(raw.get("type"), f"{where}: label {number}.type"),
        kind=kind,
        site=None if site is None else _code(site, f"{where}: label {number}.site"),
        cielab=None if cielab is None else tuple(int(v) for v in cielab),  # type: ignore[arg-type]
        laterality=None
        if laterality is None
        else _code(laterality, f"{where}: label {number}.laterality"),
    )
    return LabelSpec(value=number, label=label, channel=int(raw.get("channel", number)))


def parse_spec(raw: Any, source: Path | None = None) -> PipelineSpec:
    """Check and convert the YAML document ``raw``; ``source`` names it in errors."""
    where = str(source or "pipeline.yaml")
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must hold a mapping, got {type(raw).__name__}.")
    for key in ("name", "inputs", "labels"):
        if key not in raw:
            raise SpecError(f"{where} has no '{key}'.")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", str(raw["name"])):
        raise SpecError(f"{where}: name must be lower-case letters, digits, '.', '_' or '-'.")
    inputs = raw["inputs"] if isinstance(raw["inputs"], list) else [raw["inputs"]]
    if not inputs:
        raise SpecError(f"{where}: inputs is empty.")
    if not isinstance(raw["labels"], dict) or not raw["labels"]:
        raise SpecError(f"{where}: labels must map label values to descriptions.")
    labels = tuple(
        sorted((_label(k, v, where) for k, v in raw["labels"].items()), key=lambda s: s.value)
    )
    use = raw.get("intended_use") or {}
    explain = raw.get("explain") or {}
    passes = int(explain.get("tta_passes", 1))
    if passes < 0:
        raise SpecError(f"{where}: explain.tta_passes must be 0 or more, got {passes}.")
    axes = tuple(int(a) for a in explain.get("flip_axes", (0, 1, 2)))
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise SpecError(f"{where}: explain.flip_axes must be spatial axes 0..2, got {axes}.")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise SpecError(f"{where}: overrides must map ConfigParser ids to values.")
    return PipelineSpec(
        name=str(raw["name"]),
        version=None if raw.get("version") is None else str(raw["version"]),
        description=str(raw.get("description", "")).strip(),
        inputs=tuple(_input(r, n, where) for n, r in enumerate(inputs)),
        labels=labels,
        intended_use=IntendedUse(
            intensity_range=_pair(use.get("intensity_range"), f"{where}: intensity_range"),
            fov_mm=_pair(use.get("fov_mm"), f"{where}: fov_mm"),
        ),
        explain=ExplainSpec(
            tta_passes=passes,
            flip_axes=axes,
            flag_uncertainty_above=float(explain.get("flag_uncertainty_above", 0.2)),
        ),
        min_volume_ml=float((raw.get("thresholds") or {}).get("min_volume_ml", 0.0)),
        model_card=None if raw.get("model_card") is None else str(raw["model_card"]),
        allow_untrained=bool(raw.get("allow_untrained", False)),
        overrides={str(k): v for k, v in overrides.items()},
        source=source,
    )


def read_spec(path: Path) -> PipelineSpec:
    """Read and check one ``pipeline.yaml``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}.") from None
    return parse_spec(raw, path)


def spec_path_for(bundle_dir: Path) -> Path | None:
    """The bundle's own ``pipeline.yaml``, else the one medvision ships for a zoo bundle."""
    own = Path(bundle_dir) / "pipeline.yaml"
    if own.is_file():
        return own
    shipped = ZOO_SPECS / f"{Path(bundle_dir).name}.yaml"
    return shipped if shipped.is_file() else None


__all__ = [
    "ExplainSpec",
    "InputSpec",
    "IntendedUse",
    "LabelSpec",
    "PipelineSpec",
    "SpecError",
    "parse_spec",
    "read_spec",
    "spec_path_for",
]
