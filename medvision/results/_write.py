"""Write seg.dcm, sr.dcm and findings.json for one Findings, each atomically.

With ``planar_sr=True`` also sr-planar.dcm: each lesion's long and short axis drawn on its
key slice, for web viewers such as OHIF that list only measurements with image coordinates
(``_planar_sr.py``). With ``overlays=True`` also overlay-NN.dcm (Secondary Capture images
with the findings burned in, for viewers without SEG support) and kos.dcm (a Key Object
Selection pointing at them). They are extras, never a replacement for the SEG and SR
(STANDARDS AIR-04).

Why atomic (temp file in the same folder, fsync, rename): the node's sender and the web
viewer pick up whatever lies in the output folder, and a half-written DICOM file is worse
than none. findings.json is the same Findings as the SEG and SR, plus the UIDs that tie
the three together, so a reader of the JSON can find the DICOM objects and vice versa.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import Dataset

from medvision.errors import ResultError
from medvision.findings import Findings, Label
from medvision.results._device import DeviceInfo
from medvision.results._kos import build_kos
from medvision.results._overlay import build_overlays, overlay_slice_index
from medvision.results._planar_sr import build_planar_sr
from medvision.results._seg import build_seg
from medvision.results._sr import build_sr

logger = logging.getLogger(__name__)

SEG_NAME = "seg.dcm"
SR_NAME = "sr.dcm"
PLANAR_SR_NAME = "sr-planar.dcm"
JSON_NAME = "findings.json"
KOS_NAME = "kos.dcm"
#: Units of the numbers in findings.json and the SR: the same on both sides.
JSON_UNITS = {"volume": "mL", "lengths": "mm", "attenuation": "[hnsf'U]", "confidence": "1"}


def overlay_name(number: int) -> str:
    """File name of the number-th overlay image (1-based): overlay-01.dcm, ..."""
    return f"overlay-{number:02d}.dcm"


@dataclass(frozen=True)
class ResultFiles:
    """What :func:`write_results` wrote. ``seg_path`` is None when there were no findings."""

    seg_path: Path | None
    sr_path: Path
    json_path: Path
    seg_sop_instance_uid: str | None
    sr_sop_instance_uid: str
    seg_series_instance_uid: str | None
    sr_series_instance_uid: str
    #: Written only with ``write_results(..., overlays=True)`` and at least one finding.
    overlay_paths: tuple[Path, ...] = ()
    overlay_sop_instance_uids: tuple[str, ...] = ()
    overlay_series_instance_uid: str | None = None
    kos_path: Path | None = None
    kos_sop_instance_uid: str | None = None
    kos_series_instance_uid: str | None = None
    #: Written only with ``write_results(..., planar_sr=True)`` and a lesion with axes.
    planar_sr_path: Path | None = None
    planar_sr_sop_instance_uid: str | None = None
    planar_sr_series_instance_uid: str | None = None


def findings_json(
    findings: Findings,
    seg: Dataset | None,
    sr: Dataset,
    *,
    seg_file: str | None = SEG_NAME,
    sr_file: str = SR_NAME,
    overlays: Sequence[Dataset] | None = None,
    kos: Dataset | None = None,
    planar_sr: Dataset | None = None,
) -> dict[str, Any]:
    """``findings.to_json()`` plus where each finding lives in the SEG and the SR.

    With ``overlays`` (and ``kos``) given, adds ``overlays`` (one entry per image: file,
    UIDs, the slice and source instance it shows, the segment numbers on it) and ``kos``.
    Without them neither key is written, so existing readers see the same document.
    With ``planar_sr`` adds ``planar_sr`` (file and UIDs; its groups carry the findings'
    tracking UIDs).
    """
    doc = findings.to_json()
    doc["units"] = dict(JSON_UNITS)
    doc["lesion_count"] = len(findings.lesions)
    doc["verified"] = False
    doc["seg"] = (
        None
        if seg is None
        else {
            "file": seg_file,
            "sop_class_uid": str(seg.SOPClassUID),
            "sop_instance_uid": str(seg.SOPInstanceUID),
            "series_instance_uid": str(seg.SeriesInstanceUID),
        }
    )
    doc["sr"] = {
        "file": sr_file,
        "sop_class_uid": str(sr.SOPClassUID),
        "sop_instance_uid": str(sr.SOPInstanceUID),
        "series_instance_uid": str(sr.SeriesInstanceUID),
    }
    if planar_sr is not None:
        doc["planar_sr"] = {
            "file": PLANAR_SR_NAME,
            "sop_class_uid": str(planar_sr.SOPClassUID),
            "sop_instance_uid": str(planar_sr.SOPInstanceUID),
            "series_instance_uid": str(planar_sr.SeriesInstanceUID),
        }
    for item in doc["findings"]:
        item["seg_segment_number"] = item["number"] if seg is not None else None
    if overlays is not None:
        doc["overlays"] = [_overlay_entry(findings, o, n) for n, o in enumerate(overlays, 1)]
        doc["kos"] = (
            None
            if kos is None
            else {
                "file": KOS_NAME,
                "sop_class_uid": str(kos.SOPClassUID),
                "sop_instance_uid": str(kos.SOPInstanceUID),
                "series_instance_uid": str(kos.SeriesInstanceUID),
            }
        )
    return doc


def _overlay_entry(findings: Findings, overlay: Dataset, number: int) -> dict[str, Any]:
    k = overlay_slice_index(findings, overlay)
    return {
        "file": overlay_name(number),
        "sop_class_uid": str(overlay.SOPClassUID),
        "sop_instance_uid": str(overlay.SOPInstanceUID),
        "series_instance_uid": str(overlay.SeriesInstanceUID),
        "slice": k,
        "source_sop_instance_uid": findings.volume.sop_instance_uids[k],
        "segment_numbers": [f.number for f in findings.items if f.mask[k].any()],
    }


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_dicom(ds: Dataset, path: Path) -> None:
    """Write ``ds`` to ``path`` atomically (temporary file, fsync, rename)."""
    _atomic_write(path, lambda fh: ds.save_as(fh, enforce_file_format=True))


def write_results(
    findings: Findings,
    out_dir: Path,
    *,
    labels: Sequence[Label] | None = None,
    device: DeviceInfo | None = None,
    overlays: bool = False,
    planar_sr: bool = False,
) -> ResultFiles:
    """Build the SEG (if there is any finding), the SR and findings.json into ``out_dir``.

    ``planar_sr=True`` adds sr-planar.dcm when a lesion has axes to draw.

    ``overlays=True`` adds overlay-NN.dcm and kos.dcm when there is any finding (with no
    finding there is nothing to burn in, and the SR says so). Everything is built in memory
    first, so a failure leaves no partial set of files. Raises :class:`ResultError` with a
    one-line reason.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ResultError(f"Could not write results to {out_dir}: it is not a folder.")
    seg = build_seg(findings, device=device) if findings.items else None
    sr = build_sr(findings, seg, labels=labels, device=device)
    images = build_overlays(findings, device=device) if overlays and findings.items else []
    kos = build_kos(findings, images, device=device) if images else None
    planar = build_planar_sr(findings, device=device) if planar_sr else None
    doc = findings_json(
        findings,
        seg,
        sr,
        seg_file=SEG_NAME if seg is not None else None,
        overlays=images if overlays else None,
        kos=kos,
        planar_sr=planar,
    )
    try:
        payload = json.dumps(doc, indent=2, allow_nan=False).encode("utf-8")
    except ValueError as exc:
        raise ResultError(f"findings.json holds a value JSON cannot carry: {exc}") from exc
    seg_path = out_dir / SEG_NAME if seg is not None else None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if seg is not None and seg_path is not None:
            save_dicom(seg, seg_path)
        save_dicom(sr, out_dir / SR_NAME)
        if planar is not None:
            save_dicom(planar, out_dir / PLANAR_SR_NAME)
        for number, image in enumerate(images, start=1):
            save_dicom(image, out_dir / overlay_name(number))
        if kos is not None:
            save_dicom(kos, out_dir / KOS_NAME)
        _atomic_write(out_dir / JSON_NAME, lambda fh: fh.write(payload))
    except OSError as exc:
        raise ResultError(f"Could not write results to {out_dir}: {exc.strerror or exc}") from exc
    logger.info(
        "Wrote %s results, %s planar SR and %d overlay image(s) to %s",
        "SEG, SR and JSON" if seg else "SR and JSON",
        "a" if planar is not None else "no",
        len(images),
        out_dir,
    )
    return ResultFiles(
        seg_path=seg_path,
        sr_path=out_dir / SR_NAME,
        json_path=out_dir / JSON_NAME,
        seg_sop_instance_uid=str(seg.SOPInstanceUID) if seg is not None else None,
        sr_sop_instance_uid=str(sr.SOPInstanceUID),
        seg_series_instance_uid=str(seg.SeriesInstanceUID) if seg is not None else None,
        sr_series_instance_uid=str(sr.SeriesInstanceUID),
        overlay_paths=tuple(out_dir / overlay_name(n) for n in range(1, len(images) + 1)),
        overlay_sop_instance_uids=tuple(str(o.SOPInstanceUID) for o in images),
        overlay_series_instance_uid=str(images[0].SeriesInstanceUID) if images else None,
        kos_path=out_dir / KOS_NAME if kos is not None else None,
        kos_sop_instance_uid=str(kos.SOPInstanceUID) if kos is not None else None,
        kos_series_instance_uid=str(kos.SeriesInstanceUID) if kos is not None else None,
        planar_sr_path=out_dir / PLANAR_SR_NAME if planar is not None else None,
        planar_sr_sop_instance_uid=str(planar.SOPInstanceUID) if planar is not None else None,
        planar_sr_series_instance_uid=(
            str(planar.SeriesInstanceUID) if planar is not None else None
        ),
    )


__all__ = [
    "JSON_NAME",
    "KOS_NAME",
    "PLANAR_SR_NAME",
    "SEG_NAME",
    "SR_NAME",
    "ResultFiles",
    "findings_json",
    "overlay_name",
    "write_results",
]
