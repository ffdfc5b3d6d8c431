"""A MONAI bundle folder as a medvision :class:`~medvision.pipelines.Pipeline`.

Single-series bundles fulfil the ordinary contract (``accepts`` then ``run``). Bundles that
need several series (BraTS: T1c, T1, T2, FLAIR stacked as channels) keep that contract too
but are run through :meth:`BundlePipeline.run_multi`, fed by :meth:`choose_inputs`, which
fills each input of ``pipeline.yaml`` from a study's series by the same header rules.
``run`` on such a bundle raises a clear error instead of guessing the other series.

Heavy parts (torch, MONAI, the network) load on the first run, so building the object to
list or choose pipelines stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import generate_uid
from scipy import ndimage

from medvision.dicom import SeriesInfo, Volume
from medvision.errors import PipelineError
from medvision.findings import AlgorithmInfo, Finding, FindingKind, Findings, Label, measure
from medvision.pipelines._contract import Acceptance, PipelineBase, Progress, no_progress
from medvision.pipelines.bundle._quality import check_series, match_series, quality_flags
from medvision.pipelines.bundle._spec import LabelSpec, PipelineSpec, read_spec, spec_path_for

CONFIDENCE_METHOD = "mean model probability of the label inside the segment"
UNCERTAINTY_METHOD = (
    "mean standard deviation of the label probability inside the segment over {n} "
    "test-time augmentation passes (input flips)"
)


class BundlePipeline(PipelineBase):
    """One bundle folder plus its ``pipeline.yaml``."""

    #: How :meth:`_scores` computes a finding's confidence (written into findings and SR).
    confidence_method = CONFIDENCE_METHOD

    def __init__(
        self,
        root: Path,
        spec: PipelineSpec | Path | None = None,
        *,
        device: str | None = None,
        allow_untrained: bool | None = None,
        tta_passes: int | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        if not isinstance(spec, PipelineSpec):
            path = spec or spec_path_for(self.root)
            if path is None:
                raise PipelineError(
                    f"Bundle {self.root} has no pipeline.yaml and medvision knows no default "
                    "for it; see docs/models.md."
                )
            spec = read_spec(Path(path))
        self.spec = spec
        meta_path = self.root / "configs" / "metadata.json"
        self.metadata: dict[str, Any] = (
            json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        )
        self.name = spec.name
        self.version = spec.version or str(self.metadata.get("version", "0"))
        self.description = spec.description or str(self.metadata.get("description", ""))
        self._device = device
        self._allow_untrained = spec.allow_untrained if allow_untrained is None else allow_untrained
        self._tta = spec.explain.tta_passes if tta_passes is None else max(0, int(tta_passes))
        self._overrides = {**spec.overrides, **dict(overrides or {})}
        self._runtime: Any = None

    # -- the contract ---------------------------------------------------------------
    @property
    def labels(self) -> tuple[Label, ...]:
        return tuple(s.label for s in self.spec.labels)

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(i.key for i in self.spec.inputs)

    def accepts(self, series: SeriesInfo) -> Acceptance:
        """Header check against the reference input (the first one of pipeline.yaml)."""
        return check_series(self.spec.reference, series)

    def choose_inputs(self, series: Sequence[SeriesInfo]) -> dict[str, SeriesInfo] | None:
        """Fill every input from ``series`` (a study's series), or None if one stays empty."""
        chosen: dict[str, SeriesInfo] = {}
        for rule in self.spec.inputs:
            fits = [s for s in series if not match_series(rule, s) and s not in chosen.values()]
            if not fits:
                return None
            chosen[rule.key] = max(
                fits, key=lambda s: (-(s.slice_thickness_mm or 10.0), s.num_frames)
            )
        return chosen

    def run(self, volume: Volume, progress: Progress = no_progress) -> Findings:
        if len(self.spec.inputs) > 1:
            raise PipelineError(
                f"{self.name} needs {len(self.spec.inputs)} series ({', '.join(self.input_keys)}); "
                "choose them with choose_inputs() and call run_multi()."
            )
        return self.run_multi({self.spec.reference.key: volume}, progress)

    def run_multi(
        self, volumes: Mapping[str, Volume], progress: Progress = no_progress
    ) -> Findings:
        """Run on one volume per input key; findings lie on the reference input's grid."""
        missing = [k for k in self.input_keys if k not in volumes]
        if missing:
            raise PipelineError(f"{self.name}: no volume given for input(s) {', '.join(missing)}.")
        reference = volumes[self.spec.reference.key]
        ordered = [reference] + [resample_to(volumes[k], reference) for k in self.input_keys[1:]]
        runtime = self.runtime()
        prediction = runtime.predict(
            ordered,
            tta_passes=self._tta,
            flip_axes=self.spec.explain.flip_axes,
            progress=progress,
        )
        items = self._findings(prediction, reference)
        flags = quality_flags(self.spec, ordered, untrained=runtime.weights.untrained)
        limit = self.spec.explain.flag_uncertainty_above
        flags += [
            f"{f.tracking_id}: uncertain (mean TTA spread {f.uncertainty:.2f} > {limit:g})"
            for f in items
            if f.uncertainty is not None and f.uncertainty > limit
        ]
        return Findings(
            pipeline=self.name,
            pipeline_version=self.version,
            algorithm=self._algorithm(runtime, prediction.passes),
            volume=reference,
            items=tuple(items),
            quality_flags=tuple(flags),
        )

    # -- internals --------------------------------------------------------------------
    def runtime(self) -> Any:
        """The loaded bundle (parsed configs, network on its device), built once."""
        if self._runtime is None:
            from medvision.pipelines.bundle._runtime import BundleRuntime

            self._runtime = BundleRuntime(
                self.root,
                overrides=self._overrides,
                device=self._device,
                allow_untrained=self._allow_untrained,
            )
        return self._runtime

    def _algorithm(self, runtime: Any, passes: int) -> AlgorithmInfo:
        untrained = runtime.weights.untrained
        return AlgorithmInfo(
            name=self.name,
            version=f"{self.version}-untrained" if untrained else self.version,
            weights_sha256=runtime.weights.sha256,
            parameters={
                "bundle": str(self.metadata.get("name", self.root.name)),
                "bundle_version": str(self.metadata.get("version", "")),
                "device": str(runtime.device),
                "tta_passes": str(passes),
                "inputs": ",".join(self.input_keys),
            },
        )

    def _findings(self, prediction: Any, volume: Volume) -> list[Finding]:
        if prediction.labels.shape != volume.shape:
            raise PipelineError(
                f"{self.name}: output grid {prediction.labels.shape} is not the source grid "
                f"{volume.shape}."
            )
        return self._label_findings(prediction, volume)

    def _label_findings(self, prediction: Any, volume: Volume) -> list[Finding]:
        """One finding per organ label, one per connected part of a lesion label.

        Shared with the nnU-Net pipeline: only :meth:`_check_label` and :meth:`_scores`
        differ between runtimes (what a prediction holds besides its label map).
        """
        items: list[Finding] = []
        voxel_ml = volume.voxel_volume_mm3 / 1000.0
        for spec in self.spec.labels:
            mask = prediction.labels == spec.value
            if not mask.any():
                continue
            self._check_label(spec, prediction)
            parts = (
                [mask]
                if spec.label.kind is FindingKind.ORGAN
                else _components(mask, int(np.ceil(self.spec.min_volume_ml / voxel_ml)))
            )
            for n, part in enumerate(parts, start=1):
                if part.sum() * voxel_ml < self.spec.min_volume_ml:
                    continue
                items.append(self._finding(len(items) + 1, spec, part, n, prediction, volume))
        return items

    def _check_label(self, spec: LabelSpec, prediction: Any) -> None:
        """A present label must have its probability channel in the bundle's output."""
        if spec.channel >= prediction.probabilities.shape[0]:
            raise PipelineError(
                f"{self.name}: label {spec.value} reads probability channel {spec.channel}, "
                f"the bundle gives {prediction.probabilities.shape[0]}."
            )

    def _finding(
        self,
        number: int,
        spec: LabelSpec,
        mask: np.ndarray,
        n: int,
        prediction: Any,
        volume: Volume,
    ) -> Finding:
        lesion = spec.label.kind is FindingKind.LESION
        confidence, uncertainty = self._scores(spec, mask, prediction)
        return Finding(
            number=number,
            label=spec.label,
            mask=mask,
            tracking_id=f"{spec.label.name} {n}" if lesion else spec.label.name,
            tracking_uid=generate_uid(),
            measurements=measure(mask, volume, lesion=lesion),
            confidence=confidence,
            confidence_method=self.confidence_method,
            uncertainty=uncertainty,
            uncertainty_method=(
                UNCERTAINTY_METHOD.format(n=prediction.passes) if uncertainty is not None else ""
            ),
        )

    def _scores(
        self, spec: LabelSpec, mask: np.ndarray, prediction: Any
    ) -> tuple[float, float | None]:
        """Confidence and TTA uncertainty of one segment, from the bundle's probabilities."""
        prob = prediction.probabilities[spec.channel][mask]
        uncertainty = None
        if prediction.uncertainty is not None:
            uncertainty = float(np.clip(prediction.uncertainty[spec.channel][mask].mean(), 0, 1))
        return float(np.clip(prob.mean(), 0.0, 1.0)), uncertainty


def _components(mask: np.ndarray, min_voxels: int = 1) -> list[np.ndarray]:
    """Connected parts (26-connected) of at least ``min_voxels``, largest first.

    Sizes are counted before any part's mask is built: a noisy output with thousands of
    specks must not cost thousands of full-volume comparisons.
    """
    labelled, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labelled.ravel())[1:]
    keep = [int(i) for i in np.argsort(-sizes, kind="stable") if sizes[i] >= max(1, min_voxels)]
    return [labelled == (i + 1) for i in keep]


def resample_to(volume: Volume, reference: Volume) -> Volume:
    """``volume`` on ``reference``'s grid (linear), unchanged when the grids already agree."""
    if volume.shape == reference.shape and np.allclose(volume.affine, reference.affine, atol=1e-3):
        return volume
    import SimpleITK as sitk

    def image(v: Volume) -> sitk.Image:
        img = sitk.GetImageFromArray(v.array)
        img.SetSpacing([float(s) for s in v.spacing])
        img.SetOrigin([float(o) for o in v.origin])
        img.SetDirection([float(d) for d in np.asarray(v.direction).ravel()])
        return img

    out = sitk.Resample(image(volume), image(reference), sitk.Transform(), sitk.sitkLinear, 0.0)
    return reference.with_array(sitk.GetArrayFromImage(out))


__all__ = ["CONFIDENCE_METHOD", "BundlePipeline", "resample_to"]
