"""``medvision train lungs|lesions``: the reproducible record of how a default model was made.

Why a hand-written loop rather than MONAI's engines: it must resume exactly after being
killed on a shared 2-core machine (model, optimiser, step and every random generator are
checkpointed), run with one thread so that others keep a core, and log every number it
depends on (seeds, data list, hyper-parameters) next to the checkpoints.

Augmentation is done on patches in torch (one affine ``grid_sample``, intensity scale and
shift in HU, noise, blur) because MONAI's dictionary transforms on whole volumes cost more
CPU than the network itself at this size. Nothing is mirrored left-right: the labels are
sided.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvision.training._bundle import TaskSpec, write_bundle
from medvision.training._card import lesion_card, lung_card
from medvision.training._data import (
    LESION_VALUE,
    Case,
    build_cases,
    cache_root,
    datalist_record,
    lesion_recipes,
    lung_recipes,
)

LUNG_LABELS: dict[int, dict[str, Any]] = {
    1: {
        "name": "Right lung",
        "kind": "organ",
        "category": {"value": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"},
        "type": {"value": "3341006", "scheme": "SCT", "meaning": "Right lung"},
        "cielab": [55000, 20000, 40000],
    },
    2: {
        "name": "Left lung",
        "kind": "organ",
        "category": {"value": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"},
        "type": {"value": "44029006", "scheme": "SCT", "meaning": "Left lung"},
        "cielab": [55000, 40000, 20000],
    },
}

TASKS: dict[str, TaskSpec] = {
    "lungs": TaskSpec(
        task="lungs",
        bundle="lungs_ct_unet",
        pipeline="lungs-ct-unet",
        version="0.2.0",
        description="Right and left lung on CT (3-D MONAI UNet, 3 mm, trained by medvision).",
        pixdim=(3.0, 3.0, 3.0),
        hu_window=(-1000.0, 600.0),
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
        num_res_units=2,
        out_channels=3,
        patch=(80, 80, 48),
        labels=LUNG_LABELS,
        pre_invert=[
            {
                "_target_": "medvision.training.transforms.KeepInsideBodyd",
                "keys": "pred",
                "image_key": "@image_key",
                "threshold": 0.3125,
                "channels": [1, 2],
            }
        ],
        post=[
            {
                "_target_": "KeepLargestConnectedComponentd",
                "keys": "pred",
                "applied_labels": [1, 2],
                "independent": True,
            }
        ],
        min_volume_ml=5.0,
    ),
}


LESION_LABELS: dict[int, dict[str, Any]] = {
    1: {
        "name": "Lung lesion",
        "kind": "lesion",
        "category": {
            "value": "49755003",
            "scheme": "SCT",
            "meaning": "Morphologically Abnormal Structure",
        },
        "type": {"value": "52988006", "scheme": "SCT", "meaning": "Lesion"},
        "site": {"value": "39607008", "scheme": "SCT", "meaning": "Lung"},
        "cielab": [50000, 60000, 50000],
    },
}

#: The first lesion model (a voxel-wise UNet on synthetic chests), kept reproducible; the
#: default lesion stage is now the learned filter (``medvision train lesions``).
TASKS["lesions-unet"] = TaskSpec(
    task="lesions-unet",
    bundle="lung_lesions_ct_unet",
    pipeline="lung-lesions-ct-unet",
    version="0.1.0",
    description="Lung lesions (tumours, nodules) on CT (3-D MONAI UNet, trained by medvision).",
    pixdim=(1.5, 1.5, 2.5),
    hu_window=(-1000.0, 400.0),
    channels=(8, 16, 32, 64),
    strides=(2, 2, 2),
    num_res_units=2,
    out_channels=2,
    patch=(96, 96, 48),
    labels=LESION_LABELS,
    post=[],
    min_volume_ml=0.1,
)


def _lesion_classes(label: np.ndarray) -> np.ndarray:
    """Cached label map (lungs 1-2, lesions 3) -> lesion task classes (lesion 1)."""
    return (label == LESION_VALUE).astype(np.uint8)


@dataclass(frozen=True)
class HyperParams:
    steps: int = 1500
    batch: int = 2
    lr: float = 3e-3
    weight_decay: float = 1e-5
    seed: int = 20261126
    checkpoint_every: int = 100
    #: sampling weight of each case kind per batch item
    p_real: float = 0.3
    p_negative: float = 0.05
    p_foreground: float = 0.7
    synthetic_cases: int = 16
    threads: int = 1


def _log_to(path: Path, time_format: str = "%Y-%m-%dT%H:%M:%S") -> Callable[[str], None]:
    """A training log: each line printed and appended to ``path`` (a resumed run adds to it)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        line = f"{time.strftime(time_format)} {msg}"
        print(line, flush=True)
        with open(path, "a") as fh:
            fh.write(line + "\n")

    return log


class PatchSampler:
    """Random training patches with the bundle's intensity window applied last."""

    def __init__(self, cases: list[Case], spec: TaskSpec, hp: HyperParams, seed: int) -> None:
        self.cases, self.spec, self.hp = cases, spec, hp
        self.rng = np.random.default_rng(seed)
        names = {"synthetic": "synthetic", "real-classical": "real", "real-negative": "negative"}
        kinds = [names.get(c.kind, "synthetic") for c in cases]
        self.by_kind = {k: [i for i, v in enumerate(kinds) if v == k] for k in set(kinds)}
        self.fg = [np.argwhere(c.label > 0) for c in cases]

    def _pick_case(self) -> int:
        u = self.rng.random()
        if u < self.hp.p_negative and self.by_kind.get("negative"):
            pool = self.by_kind["negative"]
        elif u < self.hp.p_negative + self.hp.p_real and self.by_kind.get("real"):
            pool = self.by_kind["real"]
        else:
            pool = self.by_kind.get("synthetic") or list(range(len(self.cases)))
        return int(pool[self.rng.integers(len(pool))])

    def _crop(self, n: int, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.cases[n]
        shape = np.array(c.image.shape)
        if self.rng.random() < self.hp.p_foreground and len(self.fg[n]):
            centre = self.fg[n][self.rng.integers(len(self.fg[n]))]
        else:
            centre = np.array([self.rng.integers(s) for s in shape])
        lo = centre - size // 2
        img = np.full(tuple(size), -1024.0, np.float32)
        lab = np.zeros(tuple(size), np.uint8)
        src_lo, src_hi = np.maximum(lo, 0), np.minimum(lo + size, shape)
        dst_lo = src_lo - lo
        dst_hi = dst_lo + (src_hi - src_lo)
        if np.all(src_hi > src_lo):
            s = tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))
            d = tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi, strict=True))
            img[d], lab[d] = c.image[s], c.label[s]
        return img, lab

    def batch(self, device: Any = None) -> tuple[Any, Any]:
        """One augmented batch; the augmentation runs on ``device`` (the GPU when training
        on one: on a CPU it costs more than the network's step there)."""
        import torch
        import torch.nn.functional as F

        patch = np.array(self.spec.patch)
        big = (patch * 1.3).astype(int)  # room for rotation and zoom
        imgs, labs = [], []
        for _ in range(self.hp.batch):
            img, lab = self._crop(self._pick_case(), big)
            imgs.append(img)
            labs.append(lab)
        x = torch.from_numpy(np.stack(imgs))[:, None].to(device)
        y = torch.from_numpy(np.stack(labs).astype(np.float32))[:, None].to(device)
        # Affine: rotation (mostly about the cranio-caudal axis), anisotropic zoom.
        thetas = []
        for _ in range(self.hp.batch):
            ax, ay, az = (
                self.rng.uniform(-0.08, 0.08),
                self.rng.uniform(-0.08, 0.08),
                self.rng.uniform(-0.25, 0.25),
            )
            rx = np.array(
                [[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]]
            )
            ry = np.array(
                [[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]]
            )
            rz = np.array(
                [[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]]
            )
            zoom = np.diag(self.rng.uniform(0.8, 1.2, size=3))
            a = (rx @ ry @ rz @ zoom) * (patch / big)[::-1][None, :]
            thetas.append(np.concatenate([a, np.zeros((3, 1))], axis=1))
        theta = torch.tensor(np.stack(thetas), dtype=torch.float32, device=x.device)
        # grid_sample's grid is (x=W, y=H, z=D) with W the last axis: the scale above is
        # applied in that reversed order; out-of-patch samples read air / background.
        grid = F.affine_grid(theta, [self.hp.batch, 1, *patch.tolist()], align_corners=False)
        x = (
            F.grid_sample(
                x + 1024.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            - 1024.0
        )
        y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        # Intensity in HU: gain, offset, extra noise, occasional blur (softer kernels).
        for b in range(self.hp.batch):
            gain = float(self.rng.uniform(0.93, 1.07))
            shift = float(self.rng.uniform(-40, 40))
            x[b] = (x[b] + 1000.0) * gain - 1000.0 + shift
            sd = float(self.rng.uniform(0, 30))
            if sd > 1:
                gen = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
                x[b] += (torch.randn(x[b].shape, generator=gen) * sd).to(x.device)
            if self.rng.random() < 0.25:
                k = torch.tensor([0.25, 0.5, 0.25], device=x.device)
                for dim in range(3):
                    shape = [1, 1, 1]
                    shape[dim] = 3
                    w = k.view(1, 1, *shape)
                    pad = [0, 0, 0, 0, 0, 0]
                    pad[2 * (2 - dim)] = pad[2 * (2 - dim) + 1] = 1
                    x[b : b + 1] = F.conv3d(F.pad(x[b : b + 1], pad, mode="replicate"), w)
        lo, hi = self.spec.hu_window
        x = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        return x, y.long()


def train(
    task: str,
    *,
    steps: int | None = None,
    out: Path | None = None,
    resume: bool = False,
    smoke: bool = False,
    work_dir: Path | None = None,
    time_budget_s: float | None = None,
) -> Path:
    """Train ``task`` and write its bundle to ``out``; returns the bundle folder.

    Runs on CUDA when present (``MEDVISION_TRAIN_DEVICE`` overrides) and makes the training
    cases with ``MEDVISION_TRAIN_WORKERS`` processes (default 1). ``time_budget_s`` bounds
    the training loop on a lent machine: after 20 steps the step count is cut, if needed, to
    what fits (the cosine schedule then still ends); the steps done are logged and recorded
    in the bundle's metadata.
    """
    import torch
    from monai.losses import DiceCELoss

    spec = TASKS[task]
    hp = HyperParams()
    if smoke:
        spec = TaskSpec(
            **{
                **asdict(spec),
                "patch": (32, 32, 32),
                "channels": (4, 8, 16),
                "strides": (2, 2),
                "num_res_units": 1,
                "pixdim": (8.0, 8.0, 8.0),
            }
        )
        hp = HyperParams(steps=3, batch=1, checkpoint_every=2, synthetic_cases=2)
    if steps is not None:
        hp = HyperParams(**{**asdict(hp), "steps": int(steps)})
    work = work_dir or cache_root() / (task + ("-smoke" if smoke else ""))
    work.mkdir(parents=True, exist_ok=True)
    log = _log_to(work / "log.txt")
    torch.set_num_threads(int(os.environ.get("MEDVISION_TRAIN_THREADS", hp.threads)))
    random.seed(hp.seed)
    np.random.seed(hp.seed % 2**32)
    torch.manual_seed(hp.seed)

    label_map = None
    if task == "lungs":
        recipes = lung_recipes(smoke=smoke, synthetic=hp.synthetic_cases)
    else:
        recipes = lesion_recipes(smoke=smoke, synthetic=hp.synthetic_cases)
        label_map = _lesion_classes
    record = {
        "task": task,
        "spec": asdict(spec),
        "hyper_parameters": asdict(hp),
        "data": datalist_record(recipes),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    (work / "datalist.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    log(f"train {task}: {len(recipes)} cases, hyper-parameters {asdict(hp)}")
    cases = build_cases(
        recipes, work.parent / "data" if not smoke else work / "data", spec.pixdim, log, label_map
    )

    device = torch.device(
        os.environ.get("MEDVISION_TRAIN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    log(f"device {device}{gpu}")
    net = spec.build_network().to(device)
    log(f"network {spec.network_def()} params {sum(p.numel() for p in net.parameters())}")
    total = [hp.steps]  # the schedule's length; a time budget may shorten it (below)
    opt = torch.optim.AdamW(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s, total[0]) / total[0]))
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    sampler = PatchSampler(cases, spec, hp, hp.seed)
    ckpt = work / "checkpoint.pt"
    step = 0
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        total[0] = int(state.get("total_steps", hp.steps))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {ckpt} at step {step}")
    elif ckpt.is_file():
        log(f"{ckpt} exists but --resume not given: starting again from step 0")

    def save() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save(
            {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "total_steps": total[0],
                "sampler_rng": sampler.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
            },
            tmp,
        )
        tmp.replace(ckpt)

    net.train()
    t0, first, running = time.time(), step, None
    while step < total[0]:
        x, y = sampler.batch(device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if time_budget_s and step - first == 20:
            rate = (time.time() - t0) / 20
            fits = step + int((time_budget_s - (time.time() - t0)) / rate)
            if fits < total[0]:
                log(f"time budget {time_budget_s:.0f} s at {rate:.3f} s/step: {fits} steps")
                total[0] = max(step, fits)
        if step % 10 == 0 or step == total[0]:
            rate = (time.time() - t0) / max(1, step - first)
            log(
                f"step {step}/{total[0]} loss {value:.4f} avg {running:.4f} "
                f"lr {sched.get_last_lr()[0]:.2e} {rate:.2f} s/step (this run)"
            )
        if step % hp.checkpoint_every == 0 or step == total[0]:
            save()
    net.eval()
    bundle = out or work / "bundle" / spec.bundle
    if bundle.exists():
        shutil.rmtree(bundle)
    info = {
        "steps": step,
        "final_loss_avg": running,
        "datalist": record["data"],
        "hyper_parameters": record["hyper_parameters"] | {"steps": step},
        "device": f"{device}{gpu}",
        "command": f"medvision train {task}"
        + (f" --steps {step}" if steps is not None or step != hp.steps else "")
        + (" --smoke" if smoke else ""),
    }
    write_bundle(bundle, spec, net.state_dict(), info, card="")
    card = lung_card(bundle, None) if task == "lungs" else lesion_card(bundle, None)
    (bundle / "docs" / "README.md").write_text(card)
    log(f"bundle written to {bundle}")
    return bundle
