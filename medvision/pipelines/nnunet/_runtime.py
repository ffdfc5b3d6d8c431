"""Run an imported nnU-Net v2 model in process with nnU-Net's own predictor.

Everything that decides a voxel's label is nnU-Net's code: its pre-processing (crop,
normalisation, resampling to the plan's spacing), its sliding-window ``nnUNetPredictor``
(Gaussian weighting, mirroring, fold ensemble) and its resampling of the logits back to the
input's shape. These are the same calls ``nnUNetPredictor.predict_single_npy_array`` makes,
split only so the logits can also give each label's confidence. medvision's part is the
exact re-ordering of the DICOM volume into the array layout the model was trained on, and
back (see ``_orient``), so the label map lies on the source grid voxel for voxel.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import logging
import os
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvision._hashing import sha256_file
from medvision.dicom import Volume
from medvision.errors import PipelineError
from medvision.pipelines.nnunet._orient import reorientation

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "nnU-Net v2 is not installed; install medvision's extra: pip install 'medvision[nnunet]'"
)
_LOOKUP_LOCK = threading.Lock()
#: Trainers TotalSegmentator defines itself for training (totalsegmentator/custom_trainers.py,
#: v2.18; its lung_vessels and lung_nodules checkpoints name them). None overrides
#: ``build_network_architecture``: the network is the one their nnunetv2 base class builds.
TRAINING_ONLY_TRAINERS = {
    "nnUNetTrainerSkeletonRecall": "nnUNetTrainer",
    "nnUNetTrainer_MOSAIC_1k_QuarterLR_NoMirroring": "nnUNetTrainerNoMirroring",
    "nnUNetTrainerDiceTopK10Loss_2000epochs": "nnUNetTrainerDiceTopK10Loss",
}


def find_trainer(name: str) -> Any:
    """nnU-Net's trainer class ``name``, found as nnU-Net finds it, but robustly.

    The checkpoint names the trainer whose ``build_network_architecture`` rebuilds the
    network (TotalSegmentator's ``total``: ``nnUNetTrainerNoMirroring``; its ``--fast``
    models: ``nnUNetTrainer_4000epochs_NoMirroring``). nnU-Net finds it by importing every
    module under ``nnunetv2.training.nnUNetTrainer`` until one defines it, and stops at the
    first module that fails to import: its Primus trainers import timm, timm imports
    torchvision, and a torchvision that does not match the CPU torch (PyPI's CUDA build)
    raises there. Every trainer but ``nnUNetTrainer`` itself then fails to load. This walk
    skips such modules (they define other trainers) and logs them; TotalSegmentator's
    training-only trainers stand for their nnunetv2 base (``TRAINING_ONLY_TRAINERS``); any
    other trainer outside nnunetv2 (``nnUNet_extTrainer``) is left to nnU-Net's own lookup.
    """
    import nnunetv2.training.nnUNetTrainer as package
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    skipped: list[str] = []
    for info in pkgutil.walk_packages(
        package.__path__, f"{package.__name__}.", onerror=skipped.append
    ):
        if info.ispkg:
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 - any import failure: not this module
            skipped.append(f"{info.name} ({type(exc).__name__}: {exc})")
            continue
        found = getattr(module, TRAINING_ONLY_TRAINERS.get(name, name), None)
        if isinstance(found, type) and issubclass(found, nnUNetTrainer):
            return found
    if skipped:
        logger.info("nnU-Net trainer modules that do not import here: %s", "; ".join(skipped))
    try:
        return recursive_find_trainer_class_by_name(name)
    except Exception as exc:  # noqa: BLE001 - nnU-Net raises RuntimeError, others on import
        raise PipelineError(
            f"nnU-Net trainer {name!r} (named by the checkpoint) is not part of the installed "
            f"nnunetv2 and was not found by nnU-Net's own lookup ({exc}); a trainer a model's "
            "authors wrote themselves must be importable, e.g. via nnUNet_extTrainer."
        ) from exc


@contextlib.contextmanager
def _robust_trainer_lookup() -> Iterator[None]:
    """nnUNetPredictor's loader with :func:`find_trainer` in place of nnU-Net's lookup."""
    from nnunetv2.inference import predict_from_raw_data as module

    with _LOOKUP_LOCK:
        original = module.recursive_find_trainer_class_by_name
        module.recursive_find_trainer_class_by_name = find_trainer
        try:
            yield
        finally:
            module.recursive_find_trainer_class_by_name = original


@dataclass(frozen=True)
class Weights:
    """The checkpoints used: one digest over every fold's file, in fold order."""

    sha256: str
    untrained: bool
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class NnunetPrediction:
    """nnU-Net's label map on the source grid (``[k, j, i]``) and per-label confidence."""

    labels: np.ndarray
    #: Label value -> mean softmax probability of that label where nnU-Net chose it, on the
    #: network's grid (nnU-Net never resamples probabilities unless asked to).
    confidence: dict[int, float] = field(default_factory=dict)
    uncertainty: None = None
    passes: int = 1


def pick_device(requested: str | None = None) -> Any:
    import torch

    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class NnunetRuntime:
    """One imported model folder, loaded once into an ``nnUNetPredictor``."""

    def __init__(self, root: Path, settings: Mapping[str, Any], device: str | None = None) -> None:
        try:
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        except ImportError as exc:
            raise PipelineError(f"{INSTALL_HINT} ({exc}).") from None
        os.environ.setdefault("nnUNet_compile", "false")
        self.root = Path(root)
        self.model_dir = self.root / str(settings.get("folder", "nnunet"))
        self.folds = tuple(str(f) for f in settings.get("folds") or ())
        self.checkpoint = str(settings.get("checkpoint", "checkpoint_final.pth"))
        self.orientation = str(settings.get("orientation", "RAS"))
        self.device = pick_device(device)
        paths = tuple(self.model_dir / f"fold_{f}" / self.checkpoint for f in self.folds)
        absent = [str(p) for p in paths if not p.is_file()]
        if not paths or absent:
            raise PipelineError(f"nnU-Net model {self.root.name}: checkpoint(s) missing: {absent}.")
        digest = hashlib.sha256("".join(sha256_file(p) for p in paths).encode()).hexdigest()
        self.weights = Weights(digest if len(paths) > 1 else sha256_file(paths[0]), False, paths)
        with contextlib.redirect_stdout(io.StringIO()):  # its CPU notice is not for our users
            self.predictor = self._predictor(nnUNetPredictor, settings)
        try:
            with _robust_trainer_lookup():
                self.predictor.initialize_from_trained_model_folder(
                    str(self.model_dir),
                    use_folds=tuple(int(f) if f.isdigit() else f for f in self.folds),
                    checkpoint_name=self.checkpoint,
                )
        except PipelineError:
            raise
        except Exception as exc:  # nnU-Net raises many kinds; the user needs one line
            raise PipelineError(f"nnU-Net model {self.root.name} does not load: {exc}") from exc

    def _predictor(self, cls: Any, settings: Mapping[str, Any]) -> Any:
        return cls(
            tile_step_size=float(settings.get("tile_step_size", 0.5)),
            use_gaussian=True,
            use_mirroring=bool(settings.get("use_mirroring", True)),
            perform_everything_on_device=self.device.type == "cuda",
            device=self.device,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )

    def predict(
        self,
        volumes: Sequence[Volume],
        *,
        tta_passes: int = 0,
        flip_axes: Sequence[int] = (0, 1, 2),
        progress: Callable[[str, float], None] | None = None,
    ) -> NnunetPrediction:
        """nnU-Net's prediction for ``volumes[0]`` (single-channel models), on its grid."""
        from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape,
        )

        report = progress or (lambda stage, fraction: None)
        volume = volumes[0]
        turn = reorientation(volume.direction, volume.spacing, self.orientation)
        image = turn.forward(volume.array)[None].astype(np.float32)
        properties = {"spacing": list(turn.spacing)}
        p = self.predictor
        report("pre-processing", 0.0)
        adapter = PreprocessAdapterFromNpy(
            [image], [None], [properties], [None], p.plans_manager, p.dataset_json,
            p.configuration_manager, num_threads_in_multithreaded=1, verbose=False,
        )  # fmt: skip
        data = next(adapter)
        report("inference", 0.1)
        logits = p.predict_logits_from_preprocessed_data(data["data"]).cpu()
        report("post-processing", 0.85)
        confidence = self._confidence(logits)
        labels = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, p.plans_manager, p.configuration_manager, p.label_manager,
            data["data_properties"], return_probabilities=False,
        )  # fmt: skip
        del logits
        labels = turn.backward(np.asarray(labels)).astype(np.int16)
        if labels.shape != volume.shape:
            raise PipelineError(
                f"nnU-Net output {labels.shape} is not the source grid {volume.shape}."
            )
        report("post-processing", 1.0)
        return NnunetPrediction(labels=labels, confidence=confidence)

    def _confidence(self, logits: Any, chunk: int = 8) -> dict[int, float]:
        """Mean winning softmax probability per label, a few network slices at a time.

        Chunked because the softmax of all logits at once would add another copy of the
        largest array of the run (classes x network grid) in float32.
        """
        import torch

        manager = self.predictor.label_manager
        if manager.has_regions:
            return {}
        n = int(logits.shape[0])
        sums = torch.zeros(n, dtype=torch.float64)
        counts = torch.zeros(n, dtype=torch.float64)
        with torch.inference_mode():
            for start in range(0, int(logits.shape[1]), chunk):
                part = manager.apply_inference_nonlin(logits[:, start : start + chunk])
                best, chosen = part.float().max(dim=0)
                sums += torch.bincount(chosen.ravel(), weights=best.ravel().double(), minlength=n)
                counts += torch.bincount(chosen.ravel(), minlength=n).double()
        return {v: float(sums[v] / counts[v]) for v in range(1, n) if counts[v] > 0}


class NnunetPartsRuntime:
    """Several imported models run on one series, their label maps merged into one.

    TotalSegmentator's ``total`` is five models, each with its part of the 117 labels, run on
    the same CT. Each part is an :class:`NnunetRuntime` (nnU-Net's own prediction, exact
    re-orientation); its label values are mapped to the merged numbering of
    ``pipeline.yaml``, and a later part's label wins a voxel that two parts claim, the order
    in which TotalSegmentator merges them. A label's confidence is its own model's.
    """

    def __init__(self, root: Path, settings: Mapping[str, Any], device: str | None = None) -> None:
        shared = {k: v for k, v in settings.items() if k != "parts"}
        self.root = Path(root)
        self.parts: list[tuple[NnunetRuntime, np.ndarray]] = []
        for part in settings.get("parts") or ():
            values = {int(k): int(v) for k, v in (part.get("labels") or {}).items()}
            if not values or min(values) < 1 or min(values.values()) < 1:
                raise PipelineError(
                    f"nnU-Net model {self.root.name}: part {part.get('folder')} maps no labels."
                )
            table = np.zeros(max(values) + 1, dtype=np.int16)
            for value, merged in values.items():
                table[value] = merged
            self.parts.append((NnunetRuntime(root, {**shared, **part}, device=device), table))
        if not self.parts:
            raise PipelineError(f"nnU-Net model {self.root.name}: 'parts' is empty.")
        first = self.parts[0][0]
        self.device = first.device
        paths = tuple(p for runtime, _ in self.parts for p in runtime.weights.paths)
        digest = "".join(runtime.weights.sha256 for runtime, _ in self.parts)
        self.weights = Weights(hashlib.sha256(digest.encode()).hexdigest(), False, paths)

    def predict(
        self,
        volumes: Sequence[Volume],
        *,
        tta_passes: int = 0,
        flip_axes: Sequence[int] = (0, 1, 2),
        progress: Callable[[str, float], None] | None = None,
    ) -> NnunetPrediction:
        report = progress or (lambda stage, fraction: None)
        merged: np.ndarray | None = None
        confidence: dict[int, float] = {}
        n = len(self.parts)
        for i, (runtime, table) in enumerate(self.parts):

            def part_progress(stage: str, fraction: float, i: int = i) -> None:
                report(f"{stage} ({i + 1}/{n})", (i + fraction) / n)

            prediction = runtime.predict(volumes, progress=part_progress)
            labels = prediction.labels
            known = (labels >= 0) & (labels < len(table))
            values = np.where(known, table[np.clip(labels, 0, len(table) - 1)], 0)
            merged = values if merged is None else np.where(values > 0, values, merged)
            for value, score in prediction.confidence.items():
                if 0 < value < len(table) and table[value] > 0:
                    confidence[int(table[value])] = score
        assert merged is not None  # parts is never empty (checked above)
        return NnunetPrediction(labels=merged.astype(np.int16), confidence=confidence)


__all__ = [
    "INSTALL_HINT",
    "TRAINING_ONLY_TRAINERS",
    "NnunetPartsRuntime",
    "NnunetPrediction",
    "NnunetRuntime",
    "Weights",
    "find_trainer",
    "pick_device",
]
