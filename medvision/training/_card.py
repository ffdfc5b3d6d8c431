"""The model card of a trained bundle, written from its own records.

Why generated: what a card says about training data and accuracy must be what was done
and measured, so it is written from the bundle's ``metadata.json`` (the training record
``medvision train`` stores there) and from the figures ``medvision evaluate`` returns,
never typed by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

LUNG_DATA_TEXT = """\
## Training data (exactly what the network saw)

All cases are re-made from recipes by `medvision train lungs` and cached in
`~/.cache/medvision/train/data/` (never in the repository); the recipe list with seeds is
in `configs/metadata.json` (`medvision_training.datalist`) and in
`~/.cache/medvision/train/lungs/datalist.json`.

* **Synthetic chest CTs** (`dicom_samples` phantom drawn in memory): {n_syn} cases, varied
  by seed, matrix (128/192/256), slice thickness (1.5-5 mm), scan position (shifted up to
  90 mm towards the abdomen), noise (5-45 HU), lung density (-80..+110 HU), with 20-80
  synthesised vessels inside the lungs (labelled lung) and 0-7 bowel-gas pockets in soft
  tissue at least 12 mm from the lungs (labelled background). Labels: the phantom's exact
  lung coverage >= 1/2.
* **Real chest CT with classical labels**: {real}; labels are the classical `lung-ct`
  pipeline's left/right lungs (HU threshold, airway removed), closed by one voxel and
  hole-filled per axial slice so that vessels count as lung. Sampled for 30 % of the
  patches. This CT is the *lesion* test set; it is used here only as lung-model training
  data (the lung test set is TotalSegmentator's), and the lesion figures do not depend on
  this model.
* **Real CT without lungs** (background only): {neg}; 5 % of the patches.
* **Not used for training or tuning**: TotalSegmentator's example CTs (the lung test set,
  below). No checkpoint or hyper-parameter was chosen by looking at them: the figures below
  are from the one final model after the fixed number of steps.

## Known limits (domain gap)

* The synthetic phantom has a single anatomy (shapes vary only through augmentation:
  rotation, +-20 % zoom per axis); the only real chest anatomy seen is one patient. Expect
  lower accuracy on unusual anatomy (effusion, collapse, consolidation, post-surgery,
  emphysema, children), which none of the training data shows.
* Labels from the classical pipeline carry its errors (e.g. the lung boundary at the
  hilum, dense dependent lung excluded by the HU threshold).
* 3 mm model grid: thin structures and the exact boundary are resampled back to the input
  grid by the bundle's `Invertd`; small boundary disagreements dominate Dice on the small
  lung bases of the test CTs.
"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lung_card(bundle: Path, figures: dict[str, Any] | None) -> str:
    """The full card of a lung bundle: provenance, data, hyper-parameters, accuracy."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    info = meta.get("medvision_training", {})
    data = info.get("datalist", [])
    n_syn = sum(1 for d in data if d["kind"] == "synthetic")
    real = ", ".join(f"`{d['params']['path']}`" for d in data if d["kind"] == "real-classical")
    neg = ", ".join(f"`{d['params']['path']}`" for d in data if d["kind"] == "real-negative")
    hp = info.get("hyper_parameters", {})
    net = json.loads((bundle / "configs" / "inference.json").read_text())["network_def"]
    weights = bundle / "models" / "model.pt"
    lines = [
        f"# {meta['name']} {meta['version']}: right and left lung on CT",
        "",
        "A 3-D MONAI `UNet` trained by this project (`medvision train lungs`); labels "
        "1 = right lung, 2 = left lung (vessels inside the lung included, airways from the "
        "main bronchi up excluded). Research use only; not a medical device.",
        "",
        f"* Weights: `models/model.pt`, {weights.stat().st_size / 1e6:.2f} MB, "
        f"sha256 `{_sha256(weights)}`",
        f"* Network: `{json.dumps(net)}`",
        "* Pre-processing (in `configs/inference.json`): RAS, 3 mm isotropic, HU -1000..600 "
        "-> 0..1; sliding window 80x80x48, overlap 0.25, Gaussian blending; softmax, "
        "lung probabilities zeroed outside the body (0.2.0 on), inversion to the input "
        "grid, argmax, largest connected component per side.",
        f"* Training: {info.get('steps')} steps, batch {hp.get('batch')}, AdamW lr "
        f"{hp.get('lr')} (cosine to 2 %), weight decay {hp.get('weight_decay')}, "
        f"Dice + cross-entropy, seed {hp.get('seed')}, {hp.get('threads')} CPU thread(s); "
        "augmentation: rotation (+-0.25 rad axial, +-0.08 rad other axes), zoom 0.8-1.2 "
        "per axis, HU gain 0.93-1.07 and offset +-40, noise 0-30 HU, occasional blur; no "
        "left-right mirroring (labels are sided). Final training loss (moving average): "
        f"{info.get('final_loss_avg')}.",
        f"* Reproduce: `{info.get('command', 'medvision train lungs')}` (resumable: `--resume`).",
        "",
        LUNG_DATA_TEXT.format(n_syn=n_syn, real=real or "none", neg=neg or "none"),
    ]
    lines += [
        "## Accuracy (test set: never trained on)",
        "",
        "Which test results informed which design decisions (0.2.0 was designed after "
        "0.1.0 failed on these CTs) is in the project's docs/accuracy.md.",
        "",
    ]
    if figures is None:
        lines.append("Not measured yet: run `medvision evaluate lungs --bundle <this folder>`.")
    else:
        lines += [
            "Dice per side against TotalSegmentator's lung lobes (model output, not manual "
            "truth; v2 `total` ids 10-11 left, 12-14 right, united per side) on its example "
            "CTs in `../shared/data/ct/totalsegmentator/` (abdominal CTs, 3 mm, showing only "
            "the lung bases). Measured through the bundle runtime (`BundleRuntime.predict`), "
            "i.e. exactly as the node runs the model, on CPU.",
            "",
            "| CT | reference | right Dice | left Dice | right mL (ref / model) "
            "| left mL (ref / model) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in figures["cases"]:
            r, left = row["right"], row["left"]
            lines.append(
                f"| `{row['image']}` | `{row['reference']}` | {r['dice']:.3f} | "
                f"{left['dice']:.3f} | {r['ref_ml']} / {r['pred_ml']} | "
                f"{left['ref_ml']} / {left['pred_ml']} |"
            )
        lines += [
            "",
            f"Mean Dice {figures['mean_dice']:.3f}, lowest {figures['min_dice']:.3f} "
            "(target: >= 0.95)."
            + (
                " **Below target: not fit for use as a default model.**"
                if figures["min_dice"] < 0.95
                else ""
            ),
            "",
            "Reproduce: `medvision evaluate lungs --bundle models/lungs_ct_unet`.",
        ]
    return "\n".join(lines) + "\n"


def lesion_card(bundle: Path, figures: dict[str, Any] | None) -> str:
    """The card of a lesion bundle: provenance, data, domain gap, accuracy on A0001."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    info = meta.get("medvision_training", {})
    data = info.get("datalist", [])
    n_syn = sum(1 for d in data if d["kind"] == "synthetic")
    weights = bundle / "models" / "model.pt"
    hp = info.get("hyper_parameters", {})
    lines = [
        f"# {meta['name']} {meta['version']}: lung lesions on CT",
        "",
        "A 3-D MONAI `UNet` trained by this project (`medvision train lesions`); label 1 = "
        "lung lesion (one finding per 3-D component). Research use only.",
        "",
        f"* Weights: `models/model.pt`, {weights.stat().st_size / 1e6:.2f} MB, "
        f"sha256 `{_sha256(weights)}`",
        f"* Training: {info.get('steps')} steps, batch {hp.get('batch')}, seed "
        f"{hp.get('seed')}; reproduce with `{info.get('command', 'medvision train lesions')}`"
        + (f" (trained on {info['device']})." if info.get("device") else "."),
        "",
        "## Training data",
        "",
        f"* {n_syn} synthetic chest CTs (`dicom_samples` phantom, varied as for the lung "
        "model) with 1-5 synthesised lesions each: 5-70 mm (log-uniform), unions of 1-5 "
        "ellipsoids, half of them spiculated, solid / part-solid / ground-glass HU, "
        "anywhere in the lung including against the pleura and vessels, one-voxel "
        "partial-volume edge, smooth internal texture, scanner noise added afterwards.",
        f"* {sum(1 for d in data if d['kind'] == 'real-negative')} real CT(s) without lungs "
        "(background only).",
        "* **Not** A0001: it is the only real chest CT in `../shared/data` and the lesion test "
        "set, so lesions could not be synthesised into real lung CT. The model has seen no "
        "real lung parenchyma: expect false positives on real vessels, scars and "
        "atelectasis (the domain gap is the main limit of this model).",
        "",
        "## Accuracy (test set: A0001, never trained or tuned on)",
        "",
    ]
    if figures is None:
        lines.append("Not measured yet: run `medvision evaluate lesions --bundle <this folder>`.")
    else:
        from medvision.training._lesion_eval import format_table

        lines += [
            "Measured with `medvision evaluate lesions --bundle <this folder>` on the three "
            "real chest CTs (per patient):",
            "",
            "```",
            format_table(figures),
            "```",
        ]
    return "\n".join(lines) + "\n"
