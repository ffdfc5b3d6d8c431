"""``medvision train lesions``: the learned false-positive filter, by leave-one-patient-out.

The recipe, all seeded (``--seed``, default 12):

1. For each of the three real chest CTs, build (or reuse) the cached candidates of its
   variants (:mod:`medvision.training._lesion_filter_data`).
2. **Folds**: for each patient, train the classifier on the *other two* patients' candidates
   (real and synthetic) and test it on this patient's real candidates (variant 0) through
   the same selection as the pipeline (raw score >= threshold, then findings closer than
   5 mm merged). The fold's figures (hits, FP per scan, Dice, in-box, findings per
   tumour) and the held-out candidates' scores are written to ``<work>/folds/<patient>.json``.
3. **Calibration**: Platt scaling fitted on the pooled held-out candidates of the three
   folds (scores the networks gave patients they had not seen); a reliability table of the
   raw and calibrated score on the same held-out candidates.
4. **Final**: the classifier trained on all three patients, written as the bundle
   ``lung_lesion_filter`` with the calibration, the fold figures and the card.

The threshold (0.5 on the raw score) and every hyper-parameter were fixed before the folds
were run. Training is on one CPU thread by default (``MEDVISION_TRAIN_THREADS``), on CUDA
where present; checkpoints every 25 steps in ``<work>/<run>.ckpt.pt``, so an interrupted
run continues where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvision.training._lesion_cases import CASES, RealCase, get_case
from medvision.training._train import _log_to

#: Reliability table bins of the score.
BINS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0001)


@dataclass(frozen=True)
class FilterHP:
    steps: int = 400
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pos_fraction: float = 0.4
    seed: int = 12
    variants: int = 6
    threshold: float = 0.5
    #: Mixed precision: the forward pass in bfloat16 (autocast; weights, loss and optimiser
    #: in float32), on CUDA and on a CPU with bfloat16 instructions. On this 2-core
    #: machine's CPU (AVX-512 BF16) a step takes about 0.15 s instead of 0.3 s.
    bf16: bool = True


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Patch augmentation: a left-right mirror, HU gain/offset, noise. The mask channels
    move with the HU channels.

    No flips along y (anterior-posterior) or z (cranio-caudal) and no in-plane quarter
    turns (filter 0.1.0 had all three): the patches are sampled along the patient's axes,
    so "posterior" and "caudal" are fixed directions in every patch, and they are what
    tells gravity-dependent density (a ground-glass band along the posterior pleura of a
    supine patient) and the diaphragm dome (caudal) from a lesion. Mirroring left-right
    keeps them; the two lungs are near mirror images.
    """
    out = np.empty_like(x)
    for n in range(len(x)):
        p = x[n]
        if rng.random() < 0.5:
            p = np.flip(p, axis=3)
        p = np.array(p, dtype=np.float32)
        hu = p[0::2]
        hu *= np.float32(rng.uniform(0.9, 1.1))
        hu += np.float32(rng.uniform(-0.05, 0.05))
        hu += rng.normal(0.0, rng.uniform(0.0, 0.04), size=hu.shape).astype(np.float32)
        p[0::2] = hu
        out[n] = p
    return out


def train_network(
    x: np.ndarray,
    y: np.ndarray,
    hp: FilterHP,
    checkpoint: Path,
    log: Callable[[str], None],
) -> Any:
    """Train a fresh classifier on patches ``x`` (labels 0/1), resuming ``checkpoint``."""
    import torch

    from medvision.pipelines.lung_ct._filter import build_network

    torch.set_num_threads(int(os.environ.get("MEDVISION_TRAIN_THREADS", "1")))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(hp.seed)
    rng = np.random.default_rng(hp.seed)
    net = build_network().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(hp.steps, 1))
    step = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        log(f"resumed from {checkpoint} at step {step}")
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    if not len(pos) or not len(neg):
        raise ValueError(f"need positives and negatives, got {len(pos)} and {len(neg)}")
    n_pos = max(1, int(round(hp.batch * hp.pos_fraction)))

    def save() -> None:
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(
            {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "hp": asdict(hp),
            },
            tmp,
        )
        tmp.replace(checkpoint)

    amp = hp.bf16 and (device.type == "cuda" or _cpu_has_bf16())
    log(f"training on {device}{' with bfloat16 autocast' if amp else ''}")
    net.train()
    running = None
    start = time.perf_counter()
    while step < hp.steps:
        idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, hp.batch - n_pos)])
        xb = torch.from_numpy(augment(x[idx].astype(np.float32), rng)).to(device)
        yb = torch.from_numpy(y[idx].astype(np.float32))[:, None].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(xb)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 25 == 0 or step == hp.steps:
            save()
            log(
                f"step {step}/{hp.steps} loss {running:.3f} "
                f"({(time.perf_counter() - start) / max(step, 1):.2f} s/step this run)"
            )
    net.eval()
    return net.cpu()


def _cpu_has_bf16() -> bool:
    """Whether the CPU has bfloat16 instructions (without them autocast is slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def logits_of(net: Any, x: np.ndarray) -> np.ndarray:
    from medvision.pipelines.lung_ct._filter import LesionFilter

    return LesionFilter(net, device="cpu").logits(x.astype(np.float32))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def reliability(scores: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """Per score bin: candidates, mean score, fraction that were on a lesion."""
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
        sel = (scores >= lo) & (scores < hi)
        n = int(sel.sum())
        rows.append(
            {
                "bin": f"{lo:.1f}-{min(hi, 1.0):.1f}",
                "n": n,
                "mean_score": round(float(scores[sel].mean()), 3) if n else None,
                "fraction_lesion": round(float(labels[sel].mean()), 3) if n else None,
            }
        )
    return rows


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` minimising the log loss of ``sigmoid(a * logit + b)`` (a weak L2 on
    ``a - 1`` and ``b`` keeps it near the identity when there are few positives)."""
    from scipy.optimize import minimize

    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(labels, dtype=np.float64)

    def loss(ab: np.ndarray) -> float:
        s = ab[0] * z + ab[1]
        nll = np.logaddexp(0.0, s) - t * s
        return float(nll.mean() + 1e-3 * ((ab[0] - 1.0) ** 2 + ab[1] ** 2))

    res = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead")
    return float(res.x[0]), float(res.x[1])


def _cases_paths(
    work: Path, cases: list[RealCase], hp: FilterHP, log: Any, variants: int | None = None
) -> list[Path]:
    from medvision.training._lesion_filter_data import build_patient

    paths = []
    for case in cases:
        paths += build_patient(case, work, variants or hp.variants, hp.seed, log)
    return paths


def run_fold(work: Path, held_out: RealCase, hp: FilterHP, log: Callable[[str], None]) -> dict:
    """Train on the other patients, test on ``held_out``; the fold's record."""
    from medvision.pipelines.lung_ct._filter import merge_close
    from medvision.training._lesion_cases import load_reference, load_volume
    from medvision.training._lesion_eval import _figures
    from medvision.training._lesion_filter_data import (
        load_native_crops,
        load_variants,
    )
    from medvision.training._lesion_score import score_case

    train_cases = [c for c in CASES if c.name != held_out.name]
    x, y, _ = load_variants(_cases_paths(work, train_cases, hp, log))
    keep = y >= 0
    x, y = x[keep], y[keep]
    log(
        f"fold {held_out.name}: train on {', '.join(c.name for c in train_cases)}: "
        f"{len(y)} candidates, {int(y.sum())} positive"
    )
    net = train_network(x, y, hp, work / f"fold-{held_out.name}.ckpt.pt", log)
    test_paths = _cases_paths(work, [held_out], hp, log, variants=1)  # as acquired only
    xt, yt, meta = load_variants(test_paths)
    logits = logits_of(net, xt)
    raw = sigmoid(logits)
    crops = load_native_crops(work, held_out, hp.seed)
    volume = load_volume(held_out)
    ref = load_reference(held_out, volume)
    kept = [(c, float(r)) for c, r in zip(crops, raw, strict=True) if r >= hp.threshold]
    findings = merge_close(kept, volume)
    score = score_case([c.full(volume.shape) for c, _ in findings], ref)
    row = {
        "case": held_out.name,
        "about": held_out.about,
        "slices": volume.shape[0],
        "slice_mm": round(float(volume.spacing[2]), 3),
        "reference": "boxed slices" if ref.__class__.__name__ == "BoxReference" else "nodules",
    } | _figures(score)
    row["findings_detail"] = [
        {
            "volume_ml": round(c.volume_ml, 3),
            "mean_hu": round(c.mean_hu, 1),
            "score": round(s, 3),
            "outcome": o,
        }
        for (c, s), o in zip(findings, score.outcomes, strict=True)
    ]
    record = {
        "held_out": held_out.name,
        "trained_on": [c.name for c in train_cases],
        "train_candidates": int(len(y)),
        "train_positive": int(y.sum()),
        "hp": asdict(hp),
        "candidates": [
            m | {"logit": round(float(z), 4), "label": int(lab)}
            for m, z, lab in zip(meta, logits, yt, strict=True)
        ],
        "row": row,
        "classical_candidates": len(crops),
    }
    out = work / "folds" / f"{held_out.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    log(
        f"fold {held_out.name}: {score.hits}/{score.targets} hit, {score.false_positives} FP, "
        f"{score.findings} findings of {len(crops)} candidates, Dice {row['dice']}, "
        f"in-box {row['in_box']}"
    )
    return record


def summarise_folds(records: list[dict]) -> dict[str, Any]:
    """Calibration and reliability tables from the held-out candidates of every fold."""
    from medvision.training._lesion_eval import targets_met

    z = np.array([c["logit"] for r in records for c in r["candidates"] if c["label"] >= 0])
    t = np.array([c["label"] for r in records for c in r["candidates"] if c["label"] >= 0])
    a, b = fit_platt(z, t) if len(t) and 0 < t.sum() < len(t) else (1.0, 0.0)
    per_fold = {}
    for r in records:
        zf = np.array([c["logit"] for c in r["candidates"] if c["label"] >= 0])
        tf = np.array([c["label"] for c in r["candidates"] if c["label"] >= 0])
        per_fold[r["held_out"]] = reliability(sigmoid(zf), tf)
    return {
        "calibration": {
            "a": round(a, 4),
            "b": round(b, 4),
            "fitted_on": int(len(t)),
            "positives": int(t.sum()) if len(t) else 0,
        },
        "reliability_raw_pooled": reliability(sigmoid(z), t),
        "reliability_calibrated_pooled": reliability(sigmoid(a * z + b), t),
        "reliability_raw_per_fold": per_fold,
        "rows": [r["row"] for r in records],
        "targets_met": targets_met([r["row"] for r in records]),
    }


def train_lesions(
    work: Path,
    hp: FilterHP,
    out: Path | None,
    folds: list[str] | None = None,
    final: bool = True,
) -> Path | None:
    """Folds (all three unless ``folds`` names some), calibration, then the final bundle."""
    from medvision.training._lesion_bundle import write_filter_bundle

    started = time.perf_counter()
    log = _log_to(work / "log.txt", "%H:%M:%S")
    log(
        f"train lesions: hyper-parameters {asdict(hp)}, torch threads "
        f"{os.environ.get('MEDVISION_TRAIN_THREADS', '1')}"
    )
    names = folds if folds is not None else [c.name for c in CASES]
    records = []
    for name in names:
        done = work / "folds" / f"{get_case(name).name}.json"
        if done.is_file():
            records.append(json.loads(done.read_text()))
            log(f"fold {name}: already done ({done})")
            continue
        records.append(run_fold(work, get_case(name), hp, log))
    summary = summarise_folds(records) if records else None
    if summary:
        (work / "folds" / "summary.json").write_text(json.dumps(summary, indent=1))
        log(f"folds: calibration {summary['calibration']}, targets {summary['targets_met']}")
    if not final:
        return None
    from medvision.training._lesion_filter_data import load_variants

    x, y, _ = load_variants(_cases_paths(work, list(CASES), hp, log))
    keep = y >= 0
    log(f"final: {int(keep.sum())} candidates, {int(y[keep].sum())} positive")
    net = train_network(x[keep], y[keep], hp, work / "final.ckpt.pt", log)
    minutes = (time.perf_counter() - started) / 60.0
    bundle = write_filter_bundle(
        net, out or work / "bundle" / "lung_lesion_filter", hp, summary, minutes=minutes
    )
    log(f"bundle written: {bundle} ({minutes:.1f} min this run)")
    return bundle


__all__ = [
    "FilterHP",
    "augment",
    "fit_platt",
    "reliability",
    "run_fold",
    "summarise_folds",
    "train_lesions",
    "train_network",
]
