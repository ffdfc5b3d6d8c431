"""An imported nnU-Net v2 model folder as a medvision :class:`~medvision.pipelines.Pipeline`.

It is a :class:`~medvision.pipelines.bundle.BundlePipeline` in everything a user sees: the
same ``pipeline.yaml`` acceptance rules, findings, measurements, quality flags, SEG/SR
writers and audit records. Only the runtime differs (nnU-Net's own predictor instead of a
MONAI bundle's configs), and labels that have no SNOMED CT code raise a quality flag
whenever they appear. Building the object reads YAML only; nnU-Net loads on the first run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medvision.dicom import Volume
from medvision.findings import AlgorithmInfo, Finding, Findings
from medvision.pipelines._contract import Progress, no_progress
from medvision.pipelines._model_folder import is_staging
from medvision.pipelines.bundle import BundlePipeline
from medvision.pipelines.bundle._spec import LabelSpec, SpecError, read_spec
from medvision.pipelines.nnunet._labels import is_uncoded

logger = logging.getLogger(__name__)

CONFIDENCE_METHOD = (
    "mean nnU-Net softmax probability of the label where nnU-Net chose it (network grid)"
)


def is_nnunet_folder(folder: Path) -> bool:
    """An imported model: one (``nnunet/plans.json``) or merged parts (``nnunet/*/``)."""
    if not (folder / "pipeline.yaml").is_file():
        return False
    model = folder / "nnunet"
    return (model / "plans.json").is_file() or any(model.glob("*/plans.json"))


class NnunetPipeline(BundlePipeline):
    """``pipeline.yaml`` (with its ``nnunet:`` section) plus nnU-Net's own files."""

    confidence_method = CONFIDENCE_METHOD

    def __init__(self, root: Path, spec_path: Path | None = None, *, device: str | None = None):
        root = Path(root)
        spec_path = Path(spec_path or root / "pipeline.yaml")
        super().__init__(root, read_spec(spec_path), device=device)
        raw = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
        settings = raw.get("nnunet")
        parts = settings.get("parts") if isinstance(settings, dict) else None
        if not isinstance(settings, dict) or not (
            settings.get("folds")
            or (isinstance(parts, list) and parts and all(p.get("folds") for p in parts))
        ):
            raise SpecError(
                f"{spec_path}: an nnU-Net pipeline needs 'nnunet:' with 'folds' (one model) "
                "or 'parts', each with 'folds' (several models merged)."
            )
        self.settings: Mapping[str, Any] = settings
        #: The models of a merged pipeline (TotalSegmentator's ``total``), else one.
        self.parts: list[Mapping[str, Any]] = list(parts) if parts else [settings]

    def runtime(self) -> Any:
        if self._runtime is None:
            from medvision.pipelines.nnunet._runtime import NnunetPartsRuntime, NnunetRuntime

            kind = NnunetPartsRuntime if "parts" in self.settings else NnunetRuntime
            self._runtime = kind(self.root, self.settings, device=self._device)
        return self._runtime

    def run_multi(
        self, volumes: Mapping[str, Volume], progress: Progress = no_progress
    ) -> Findings:
        findings = super().run_multi(volumes, progress)
        uncoded = sorted({f.label.name for f in findings.items if is_uncoded(f.label.type.scheme)})
        if not uncoded:
            return findings
        flags = [
            f"{name}: no SNOMED CT code known for this label (private code)" for name in uncoded
        ]
        return dataclasses.replace(findings, quality_flags=(*findings.quality_flags, *flags))

    def _algorithm(self, runtime: Any, passes: int) -> AlgorithmInfo:
        return AlgorithmInfo(
            name=self.name,
            version=self.version,
            weights_sha256=runtime.weights.sha256,
            parameters={
                "runtime": "nnunetv2 nnUNetPredictor",
                "configuration": ",".join(str(p.get("configuration", "")) for p in self.parts),
                "folds": ";".join(",".join(str(f) for f in p.get("folds", ())) for p in self.parts),
                **(
                    {"models": ",".join(str(p.get("folder", "")) for p in self.parts)}
                    if len(self.parts) > 1
                    else {}
                ),
                "orientation": str(self.settings.get("orientation", "RAS")),
                "use_mirroring": str(bool(self.settings.get("use_mirroring", True))),
                "device": str(runtime.device),
            },
        )

    def _findings(self, prediction: Any, volume: Volume) -> list[Finding]:
        return self._label_findings(prediction, volume)

    def _check_label(self, spec: LabelSpec, prediction: Any) -> None:
        """nnU-Net gives a confidence per label value, no probability channels to check."""

    def _scores(
        self, spec: LabelSpec, mask: np.ndarray, prediction: Any
    ) -> tuple[float, float | None]:
        """nnU-Net's per-label confidence; its prediction carries no TTA spread."""
        return float(np.clip(prediction.confidence.get(spec.value, 0.0), 0.0, 1.0)), None


def find_nnunet_pipelines(dirs: list[Path] | None = None) -> dict[str, tuple[Path, Path]]:
    """Pipeline name -> (folder, pipeline.yaml) for every imported nnU-Net model found."""
    from medvision.pipelines.bundle import model_dirs

    found: dict[str, tuple[Path, Path]] = {}
    for base in dirs if dirs is not None else model_dirs():
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if is_staging(child) or not is_nnunet_folder(child):
                continue  # an import still being written (or replaced) is not a model yet
            try:
                spec = read_spec(child / "pipeline.yaml")
            except SpecError as exc:
                logger.warning("nnU-Net model %s skipped: %s", child, exc)
                continue
            found[spec.name] = (child, child / "pipeline.yaml")
    return found


__all__ = ["CONFIDENCE_METHOD", "NnunetPipeline", "find_nnunet_pipelines", "is_nnunet_folder"]
