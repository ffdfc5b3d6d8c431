"""Run a MONAI bundle's own pre-processing, network and post-processing on in-memory volumes.

The bundle's ``configs/inference.json`` is read unchanged through MONAI's ``ConfigParser``;
only what ties it to files is taken out: the file loaders of the pre-processing
(``LoadImage(d)``, ``EnsureChannelFirst(d)``) and the writers of the post-processing
(``SaveImage(d)``). The volume is handed over as a channel-first ``MetaTensor`` whose affine
is the DICOM geometry converted to RAS, exactly what ``LoadImaged`` would have produced from
a NIfTI file, but with no file in between. The bundle's own ``Invertd`` brings the output
back onto the source grid (one is added when the bundle has none), so a mask voxel is a
source voxel.

Why split the post-processing at its ``Invertd``: the probabilities right after inversion
are kept for the per-finding confidence; what follows (argmax, thresholds, label mapping)
makes the label map. Test-time augmentation passes only feed the uncertainty estimate; the
label map is always the bundle's unaugmented answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Activationsd, Compose, Invertd

from medvision._hashing import sha256_file
from medvision.dicom import Volume
from medvision.errors import PipelineError

logger = logging.getLogger(__name__)

_LOADERS = {"LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureChannelFirst"}
_WRITERS = {"SaveImaged", "SaveImage"}
#: LPS (DICOM) -> RAS (NIfTI, MONAI) on homogeneous coordinates.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Prediction:
    """A bundle's answer on the reference volume's grid, in ``[k, j, i]`` order."""

    labels: np.ndarray
    #: ``(channels, k, j, i)`` probabilities right after the bundle's inversion.
    probabilities: np.ndarray
    #: Same shape: standard deviation of the probabilities over the TTA passes, or None.
    uncertainty: np.ndarray | None
    passes: int


@dataclass(frozen=True)
class Weights:
    """Where the network's parameters came from."""

    sha256: str
    untrained: bool
    path: Path | None


def _target_name(item: Any) -> str:
    target = item.get("_target_", "") if isinstance(item, dict) else ""
    return str(target).rsplit(".", 1)[-1]


def _flags(value: Any) -> tuple[bool, ...]:
    return tuple(bool(v) for v in value) if isinstance(value, list | tuple) else (bool(value),)


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class BundleRuntime:
    """One bundle, parsed and loaded once, run on as many volumes as needed."""

    def __init__(
        self,
        root: Path,
        *,
        overrides: dict[str, Any] | None = None,
        device: str | None = None,
        allow_untrained: bool = False,
    ) -> None:
        self.root = Path(root)
        config = self.root / "configs" / "inference.json"
        if not config.is_file():
            raise PipelineError(f"Bundle {self.root.name} has no configs/inference.json.")
        self.device = pick_device(device)
        parser = ConfigParser()
        parser.read_config(str(config))
        meta = self.root / "configs" / "metadata.json"
        if meta.is_file():
            parser.read_meta(str(meta))
        parser["bundle_root"] = str(self.root)
        parser["device"] = f"$torch.device('{self.device}')"
        for key, value in (overrides or {}).items():
            parser[key] = value
        self._strip(parser, "preprocessing", _LOADERS)
        self._strip(parser, "postprocessing", _WRITERS)
        self.parser = parser
        self.image_key = str(parser.get("image_key", "image"))
        self.metadata: dict[str, Any] = dict(parser.get("_meta_", {}) or {})
        try:
            self.preprocessing: Compose = parser.get_parsed_content("preprocessing")
            post: Compose = parser.get_parsed_content("postprocessing")
            self.inferer = parser.get_parsed_content("inferer")
        except Exception as exc:  # MONAI raises many types; the user needs one line
            raise PipelineError(
                f"Bundle {self.root.name}: cannot build its transforms: {exc}"
            ) from exc
        self.network, self.weights = self._load_network(allow_untrained)
        self.amp = bool(parser.get("amp", parser.get("evaluator#amp", True)))
        self._post_invert, self._post_labels, self._activation = self._split(post)

    @staticmethod
    def _strip(parser: ConfigParser, section: str, names: set[str]) -> None:
        transforms = parser.get(f"{section}#transforms")
        if not isinstance(transforms, list):
            raise PipelineError(f"The bundle's '{section}' is not a Compose with a transform list.")
        parser[f"{section}#transforms"] = [t for t in transforms if _target_name(t) not in names]

    def _load_network(self, allow_untrained: bool) -> tuple[torch.nn.Module, Weights]:
        models = self.root / "models"
        pt, ts = models / "model.pt", models / "model.ts"
        if not pt.is_file() and ts.is_file():
            network = torch.jit.load(str(ts), map_location=self.device)
            return network.eval(), Weights(sha256_file(ts), False, ts)
        if not pt.is_file() and not allow_untrained:
            raise PipelineError(
                f"Bundle {self.root.name} has no weights (models/model.pt or models/model.ts)."
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # an untrained network is at least the same one every run
            network = self.parser.get_parsed_content("network_def")
        network = network.to(self.device)
        if pt.is_file():
            state = torch.load(str(pt), map_location=self.device, weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]
            try:
                network.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise PipelineError(f"Bundle {self.root.name}: weights do not fit: {exc}") from None
            weights = Weights(sha256_file(pt), False, pt)
        else:
            spec = json.dumps(self.parser.get("network_def"), sort_keys=True, default=str)
            digest = hashlib.sha256(f"untrained seed 0 {spec}".encode()).hexdigest()
            logger.warning("Bundle %s has no weights: running UNTRAINED", self.root.name)
            weights = Weights(digest, True, None)
        return network.eval(), weights

    def _split(self, post: Compose) -> tuple[Compose, Compose, Callable | None]:
        transforms = list(post.transforms)
        inverts = [n for n, t in enumerate(transforms) if isinstance(t, Invertd)]
        if not inverts:
            # A bundle that leaves its output on the network grid: invert it ourselves,
            # right after its activation.
            acts = [n for n, t in enumerate(transforms) if isinstance(t, Activationsd)]
            at = acts[-1] + 1 if acts else 0
            transforms.insert(at, self._invertd("pred"))
            inverts = [at]
        cut = inverts[-1] + 1
        activation = None
        for t in transforms[:cut]:
            if isinstance(t, Activationsd):
                # Activationsd keeps one flag per key (a tuple); its converter has defaults.
                if any(_flags(t.softmax)):
                    activation = lambda x: torch.softmax(x, dim=1)  # noqa: E731
                elif any(_flags(t.sigmoid)):
                    activation = torch.sigmoid
        return Compose(transforms[:cut]), Compose(transforms[cut:]), activation

    def _invertd(self, key: str) -> Invertd:
        return Invertd(
            keys=key, transform=self.preprocessing, orig_keys=self.image_key, nearest_interp=False
        )

    def to_metatensor(self, volumes: Sequence[Volume]) -> MetaTensor:
        """Stack co-registered volumes as channels, ``[C, i, j, k]`` with a RAS affine."""
        ref = volumes[0]
        array = np.stack([v.array.transpose(2, 1, 0) for v in volumes]).astype(np.float32)
        affine = LPS_TO_RAS @ ref.affine
        meta = {
            "filename_or_obj": "in-memory",  # no path, no patient data in MONAI's metadata
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(array.shape[1:]),
            "original_channel_dim": 0,
        }
        return MetaTensor(torch.from_numpy(array), affine=torch.from_numpy(affine), meta=meta)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            out = self.inferer(x, self.network)
        return torch.as_tensor(out).float()

    def predict(
        self,
        volumes: Sequence[Volume],
        *,
        tta_passes: int = 0,
        flip_axes: Sequence[int] = (0, 1, 2),
        progress: Callable[[str, float], None] | None = None,
    ) -> Prediction:
        """Run the bundle on ``volumes`` (the first one is the reference grid)."""
        report = progress or (lambda stage, fraction: None)
        report("pre-processing", 0.0)
        data: dict[str, Any] = {self.image_key: self.to_metatensor(volumes)}
        try:
            data = self.preprocessing(data)
        except Exception as exc:
            raise PipelineError(f"Bundle pre-processing failed: {exc}") from exc
        image = data[self.image_key]
        x = image.as_tensor().unsqueeze(0).to(self.device)
        report("inference", 0.1)
        logits = self._forward(x)
        passes = 1 + max(0, int(tta_passes))
        spread = None
        if passes > 1:
            spread = self._tta_spread(x, logits, passes, flip_axes, report)
        del x
        report("post-processing", 0.85)
        # Invertd reads the transform trace from the image and needs MetaTensors to write to.
        data["pred"] = MetaTensor(logits[0].cpu().as_subclass(torch.Tensor))
        if spread is not None:
            data["uncertainty"] = MetaTensor(spread)
        try:
            data = self._post_invert(data)
            if spread is not None:
                data = self._invertd("uncertainty")(data)
            probabilities = torch.as_tensor(data["pred"]).float().clone()
            if self._activation is None:  # a bundle without activation: confidence from softmax
                probabilities = torch.softmax(probabilities[None], dim=1)[0]
            data = self._post_labels(data)
        except Exception as exc:
            raise PipelineError(f"Bundle post-processing failed: {exc}") from exc
        labels = torch.as_tensor(data["pred"]).cpu().numpy()
        labels = labels[0] if labels.ndim == 4 else labels
        unc = None
        if spread is not None:
            unc = torch.as_tensor(data["uncertainty"]).cpu().numpy().transpose(0, 3, 2, 1)
        report("post-processing", 1.0)
        return Prediction(
            labels=np.rint(labels.transpose(2, 1, 0)).astype(np.int16),
            probabilities=probabilities.cpu().numpy().transpose(0, 3, 2, 1),
            uncertainty=None if unc is None else np.ascontiguousarray(unc, dtype=np.float32),
            passes=passes,
        )

    def _tta_spread(
        self,
        x: torch.Tensor,
        logits: torch.Tensor,
        passes: int,
        flip_axes: Sequence[int],
        report: Callable[[str, float], None],
    ) -> torch.Tensor:
        """Per-voxel standard deviation of the probabilities over flipped passes."""
        act = self._activation or (lambda t: torch.softmax(t, dim=1))
        first = act(logits)[0].cpu()
        total, total_sq = first.clone(), first.square()
        for p in range(1, passes):
            dims = [2 + flip_axes[(p - 1) % len(flip_axes)]]
            out = torch.flip(self._forward(torch.flip(x, dims)), dims)
            prob = act(out)[0].cpu()
            total += prob
            total_sq += prob.square()
            report("uncertainty (test-time augmentation)", 0.1 + 0.75 * p / passes)
        mean = total / passes
        return (total_sq / passes - mean.square()).clamp_min(0).sqrt()


__all__ = ["LPS_TO_RAS", "BundleRuntime", "Prediction", "Weights", "pick_device"]
