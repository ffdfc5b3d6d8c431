"""Our SEG and SRs of the real chest CT in OHIF, checked from what OHIF draws.

Users of other AI nodes report segmentations that OHIF shows shifted or flipped. This test
loads the real A0001 chest CT, and the SEG and SRs that ``medvision`` writes for it, into
Orthanc; opens OHIF 3.12 (the prebuilt npm package) in headless Chromium; hydrates the SEG;
and reads back the viewport's canvas at every image pixel centre. Nothing is taken from
OHIF's idea of where a segment is: the expected masks come from the SEG file (pydicom) and
the expected grey image from the CT's own pixel data, and both are compared with what was
drawn. The checks:

- the CT is drawn in the standard axial display (patient left on the image's right) at the
  extent that Cornerstone reports, proven by matching the drawn grey values to the slice;
- each segment shows in its SEG colour on exactly the slices where it has voxels, where it
  has them (a one-pixel tolerance at edges), and nowhere else;
- the left lung is on the image's right half, the right lung on the left half;
- the lesions that the radiologists boxed (PASCAL VOC boxes on named slices) are drawn
  inside those boxes;
- OHIF lists every lesion from our planar SR (sr-planar.dcm) with our label, on the slice
  our volumetric SR names, its long and short axis within 1 mm of ours, and draws that long
  axis there;
- what OHIF makes of our volumetric TID 1500 SR (none listed; see docs/viewer-ohif.md);
- no request left the machine and the page logged no error.

Set ``MEDVISION_OHIF_SHOTS=<folder>`` to save the screenshots used in docs/viewer-ohif.md.
"""

from __future__ import annotations

import base64
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage
from skimage.color import lab2rgb

from tests.viewer.conftest import BENIGN_CONSOLE_ERRORS, OhifSession, Results

LEFT_LUNG = "44029006"  # SNOMED CT Left lung
RIGHT_LUNG = "3341006"  # SNOMED CT Right lung
#: A pixel is overlay when its channels differ by at least this much. OHIF's grey CT has
#: R = G = B exactly (checked on a slice without segments), so any chroma is an overlay.
CHROMA_MIN = 8
#: Cosine between a pixel's chroma and a segment colour's chroma needed to call it that colour.
COSINE_MIN = 0.9
#: Precision and recall, with one image pixel of tolerance at edges, of each drawn colour
#: against the SEG's own masks on that slice.
AGREEMENT_MIN = 0.9


@dataclass
class CtSlice:
    sop: str
    instance: int
    position: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing: tuple[float, float]  # (between rows, between columns) as in PixelSpacing
    hu: np.ndarray

    def world(self, col: float, row: float) -> list[float]:
        """Patient coordinates (LPS mm) of a pixel centre; IPP is the first pixel's centre."""
        p = (
            self.position
            + col * self.spacing[1] * self.row_dir
            + row * self.spacing[0] * (self.col_dir)
        )
        return [float(v) for v in p]


@dataclass
class Segment:
    number: int
    label: str
    type_code: str
    rgb: np.ndarray  # the SEG's RecommendedDisplayCIELabValue as sRGB 0..255
    masks: dict[str, np.ndarray]  # SOP Instance UID of the CT slice -> boolean mask


@dataclass
class Study:
    slices: list[CtSlice]  # in InstanceNumber order, as OHIF shows them
    by_sop: dict[str, CtSlice]
    segments: list[Segment]


@dataclass
class Drawn:
    """One slice as OHIF drew it, sampled at each image pixel centre."""

    sop: str
    rgb: np.ndarray  # (rows, cols, 3) uint8
    origin: np.ndarray  # canvas px of pixel (0, 0)'s centre
    col_step: np.ndarray  # canvas px per column
    row_step: np.ndarray  # canvas px per row


def dicom_lab_to_rgb(lab: list[int]) -> np.ndarray:
    """DICOM's scaled CIELab (PS3.3 C.10.7.1.1, D65) to sRGB 0..255, clipped to the gamut."""
    scaled = np.array(
        [lab[0] / 65535 * 100, lab[1] / 65535 * 255 - 128, lab[2] / 65535 * 255 - 128]
    )
    return np.clip(lab2rgb(scaled[None, None, :])[0, 0] * 255, 0, 255)


@pytest.fixture(scope="module")
def study(chest_ct_dir: Path, medvision_results: Results) -> Study:
    """The CT slices and the SEG's masks, read with pydicom alone (not with medvision)."""
    slices = []
    for path in chest_ct_dir.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        iop = np.array(ds.ImageOrientationPatient, float)
        slices.append(
            CtSlice(
                ds.SOPInstanceUID,
                int(ds.InstanceNumber),
                np.array(ds.ImagePositionPatient, float),
                iop[:3],
                iop[3:],
                (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
                hu,
            )
        )
    slices.sort(key=lambda s: s.instance)
    seg = pydicom.dcmread(medvision_results.seg)
    assert seg.SegmentationType == "BINARY"
    frames = seg.pixel_array.astype(bool)
    segments = {
        int(item.SegmentNumber): Segment(
            int(item.SegmentNumber),
            str(item.SegmentLabel),
            str(item.SegmentedPropertyTypeCodeSequence[0].CodeValue),
            dicom_lab_to_rgb(item.RecommendedDisplayCIELabValue),
            {},
        )
        for item in seg.SegmentSequence
    }
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        segments[number].masks[str(source.ReferencedSOPInstanceUID)] = frame
    return Study(slices, {s.sop: s for s in slices}, list(segments.values()))


def colour_classes(study: Study) -> dict[str, list[Segment]]:
    """Segments grouped by their recommended colour: what a reader can tell apart on screen."""
    groups: dict[tuple[int, ...], list[Segment]] = {}
    for seg in study.segments:
        groups.setdefault(tuple(np.round(seg.rgb).astype(int)), []).append(seg)
    return {f"{g[0].label} ({len(g)} segment(s))": g for g in groups.values()}


def draw(ohif: OhifSession, ct: CtSlice) -> Drawn:
    """Show one CT slice in OHIF and read back what was drawn, at each image pixel centre."""
    if ct.sop in ohif.drawn:  # the page state does not change between checks: reuse
        return ohif.drawn[ct.sop]
    start = time.monotonic()
    try:
        ohif.drawn[ct.sop] = _draw(ohif, ct)
        return ohif.drawn[ct.sop]
    finally:
        ohif.log.timings["slices drawn"] = ohif.log.timings.get("slices drawn", 0) + 1
        spent = time.monotonic() - start
        ohif.log.timings["drawing s"] = ohif.log.timings.get("drawing s", 0) + spent


def _draw(ohif: OhifSession, ct: CtSlice) -> Drawn:
    rows, cols = ct.hu.shape
    corners = [ct.world(0, 0), ct.world(cols - 1, 0), ct.world(0, rows - 1)]
    for _attempt in range(3):
        got = ohif.page.evaluate(
            "([sop, corners, rows, cols]) => window.mvTest.show(sop, corners, rows, cols)",
            [ct.sop, corners, rows, cols],
        )
        # OHIF's own jump to the first segmented slice after hydration can come late: make
        # sure the pixels are of the slice we asked for, by its image id and its label.
        if got["sop"] == ct.sop:
            assert got["label"].startswith(f"I:{ct.instance} "), (got["label"], ct.instance)
            rgb = np.frombuffer(base64.b64decode(got["pixels"]), np.uint8).reshape(rows, cols, 3)
            o, u, v = (np.array(got[k]) for k in ("o", "u", "v"))
            return Drawn(ct.sop, rgb, o, u, v)
    raise AssertionError(f"OHIF did not stay on slice {ct.instance}")


def classify(drawn: Drawn, classes: dict[str, list[Segment]]) -> dict[str, np.ndarray]:
    """Masks of the pixels drawn in each class's colour (and of unclassifiable overlay)."""
    rgb = drawn.rgb.astype(float)
    chroma = rgb - rgb.mean(axis=2, keepdims=True)
    overlay = (rgb.max(axis=2) - rgb.min(axis=2)) >= CHROMA_MIN
    norm = np.linalg.norm(chroma, axis=2) + 1e-9
    names = list(classes)
    cosines = []
    for name in names:
        c = classes[name][0].rgb
        direction = c - c.mean()
        cosines.append((chroma @ direction) / (norm * np.linalg.norm(direction)))
    cos = np.stack(cosines)
    best = cos.argmax(axis=0)
    ok = overlay & (cos.max(axis=0) >= COSINE_MIN)
    out = {name: ok & (best == i) for i, name in enumerate(names)}
    out["unclassified"] = overlay & ~ok
    return out


def expected(classes: dict[str, list[Segment]], sop: str, shape: tuple[int, ...]) -> dict:
    none = np.zeros(shape, bool)
    return {
        name: np.logical_or.reduce([s.masks.get(sop, none) for s in segs])
        for name, segs in classes.items()
    }


def agreement(drawn: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Precision and recall with one pixel of tolerance (edges are drawn as outlines)."""
    if not truth.any() and not drawn.any():
        return 1.0, 1.0
    near_truth = ndimage.binary_dilation(truth, iterations=1)
    near_drawn = ndimage.binary_dilation(drawn, iterations=1)
    precision = (drawn & near_truth).sum() / max(drawn.sum(), 1)
    recall = (truth & near_drawn).sum() / max(truth.sum(), 1)
    return float(precision), float(recall)


def shoot(
    ohif: OhifSession,
    name: str,
    ct: CtSlice | None = None,
    box: tuple[int, int, int, int] | None = None,
    panel: str | None = None,
) -> None:
    """Save a page screenshot for the docs when MEDVISION_OHIF_SHOTS names a folder.

    ``ct``: show that slice first; ``box``: draw that pixel box (xmin, ymin, xmax, ymax) of
    the slice in yellow, placed with the viewport's own world-to-canvas mapping; ``panel``:
    the ``data-cy`` of a side-panel button to open first.
    """
    folder = os.environ.get("MEDVISION_OHIF_SHOTS")
    if not folder:
        return
    page = ohif.page
    if panel is not None:
        page.locator(f'[data-cy="{panel}"]').click()
    if ct is not None:
        page.evaluate("sop => window.mvTest.go(sop)", ct.sop)
    page.evaluate("() => window.mvTest.frames()")
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / f"ohif-{name}.png"
    page.screenshot(path=str(path))
    if ct is not None and box is not None:
        from PIL import Image, ImageDraw

        x0, y0, x1, y1 = box
        corners = page.evaluate(
            "pts => { const c = window.mvTest.viewport().canvas;"
            " const r = c.getBoundingClientRect(); const k = c.width / r.width;"
            " return window.mvTest.toCanvas(pts).map(p => [r.x + p[0] / k, r.y + p[1] / k]); }",
            [ct.world(x0 - 0.5, y0 - 0.5), ct.world(x1 + 0.5, y1 + 0.5)],
        )
        image = Image.open(path).convert("RGB")
        ImageDraw.Draw(image).rectangle([*corners[0], *corners[1]], outline=(255, 220, 0), width=2)
        image.save(path)


def test_ct_is_drawn_in_the_standard_axial_display(ohif: OhifSession, study: Study) -> None:
    """Patient left on the image's right, at the extent Cornerstone reports: from the pixels.

    The canvas position of each pixel centre comes from the viewport's worldToCanvas; if
    that extent were wrong, or the image mirrored, the drawn grey values would not match
    the slice's HU values through OHIF's window.
    """
    ct = study.slices[len(study.slices) // 2]
    drawn = draw(ohif, ct)
    # Columns run along +x (patient left) and rows along +y (posterior) in this series...
    assert np.allclose(ct.row_dir, [1, 0, 0]) and np.allclose(ct.col_dir, [0, 1, 0])
    # ...and OHIF draws columns left-to-right and rows top-to-bottom, at one square scale.
    scale = drawn.col_step[0]
    assert scale > 1, "the image is drawn smaller than one canvas pixel per image pixel"
    assert np.allclose(drawn.col_step, [scale, 0], atol=1e-3 * scale)
    assert np.allclose(drawn.row_step, [0, scale], atol=1e-3 * scale)

    lower, upper = ohif.page.evaluate(
        "() => { const r = window.mvTest.viewport().getProperties().voiRange;"
        " return [r.lower, r.upper]; }"
    )
    grey = drawn.rgb.astype(float)
    grey = grey.mean(axis=2)
    plain = (drawn.rgb.max(axis=2) - drawn.rgb.min(axis=2)) < CHROMA_MIN
    want = np.clip((ct.hu - lower) / (upper - lower), 0, 1) * 255
    error = np.abs(grey - want)[plain].mean()
    mirrored = np.abs(grey - want[:, ::-1])[plain].mean()
    shifted = np.abs(grey - np.roll(want, 3, axis=1))[plain].mean()
    # Cornerstone interpolates between pixels, so a few grey levels of difference remain.
    numbers = f"mean |difference| {error:.1f}, mirrored {mirrored:.1f}, 3 px shift {shifted:.1f}"
    assert error < 8 and mirrored > 4 * error and shifted > 1.5 * error, numbers


def test_a_slice_without_segments_has_no_overlay(ohif: OhifSession, study: Study) -> None:
    """The grey CT is exactly grey, so any colour elsewhere is an overlay."""
    empty = [ct for ct in study.slices if not any(ct.sop in s.masks for s in study.segments)]
    assert empty, "every slice has a segment: nothing to check"
    drawn = draw(ohif, empty[0])
    rgb = drawn.rgb.astype(int)
    assert (rgb.max(axis=2) - rgb.min(axis=2)).max() <= 1


def test_lungs_are_on_the_correct_side(ohif: OhifSession, study: Study) -> None:
    """Left lung in its colour on the image's right half, right lung on the left half."""
    classes = colour_classes(study)
    by_type = {s.type_code: s for s in study.segments}
    left, right = by_type[LEFT_LUNG], by_type[RIGHT_LUNG]
    # the slice where both lungs are largest together
    ct = max(
        study.slices,
        key=lambda c: min(
            left.masks.get(c.sop, np.zeros(1)).sum(), right.masks.get(c.sop, np.zeros(1)).sum()
        ),
    )
    drawn = draw(ohif, ct)
    shoot(ohif, "seg-lungs", ct, panel="panelSegmentation-btn")
    found = classify(drawn, classes)
    midline = drawn.origin[0] + drawn.col_step[0] * (ct.hu.shape[1] - 1) / 2
    columns = np.arange(ct.hu.shape[1])
    canvas_x = drawn.origin[0] + columns * drawn.col_step[0]
    for seg, side in ((left, "right"), (right, "left")):
        (name,) = [n for n, segs in classes.items() if seg in segs]
        mask = found[name]
        assert mask.sum() > 1000, f"{seg.label} is not drawn in its colour on slice {ct.instance}"
        x = np.broadcast_to(canvas_x, mask.shape)[mask]
        on_side = (x > midline).mean() if side == "right" else (x < midline).mean()
        assert on_side > 0.98, f"{seg.label}: only {on_side:.1%} on the image's {side} half"
        precision, recall = agreement(mask, seg.masks[ct.sop])
        assert precision > AGREEMENT_MIN and recall > AGREEMENT_MIN, (seg.label, precision, recall)


def slices_to_check(study: Study) -> list[CtSlice]:
    """For each segment: its largest slice, and the slices just before and after it."""
    chosen: dict[str, CtSlice] = {}
    index = {ct.sop: i for i, ct in enumerate(study.slices)}
    for seg in study.segments:
        present = sorted(index[sop] for sop in seg.masks)
        largest = max(seg.masks, key=lambda sop: seg.masks[sop].sum())
        for i in (present[0] - 1, index[largest], present[-1] + 1):
            if 0 <= i < len(study.slices):
                chosen[study.slices[i].sop] = study.slices[i]
    return sorted(chosen.values(), key=lambda ct: ct.instance)


def test_each_segment_is_drawn_on_its_slices_where_it_is(ohif: OhifSession, study: Study) -> None:
    """On every checked slice each colour is drawn exactly where the SEG has it, or not at all.

    The slices just outside each segment's extent catch a SEG drawn one slice off; the
    pixel agreement catches a shift or flip within the slice.
    """
    classes = colour_classes(study)
    problems = []
    for ct in slices_to_check(study):
        drawn = draw(ohif, ct)
        found = classify(drawn, classes)
        truth = expected(classes, ct.sop, ct.hu.shape)
        total = sum(int(found[n].sum()) for n in classes)
        if found["unclassified"].sum() > 0.02 * max(total, 1) + 5:
            problems.append(f"slice {ct.instance}: {found['unclassified'].sum()} odd pixels")
        for name in classes:
            if not truth[name].any():
                if found[name].sum() > 3:
                    problems.append(f"slice {ct.instance}: {name} drawn where the SEG has none")
                continue
            precision, recall = agreement(found[name], truth[name])
            if precision < AGREEMENT_MIN or recall < AGREEMENT_MIN:
                w, h, px = ohif.page.evaluate("() => window.mvTest.canvasPixels()")
                np.savez(
                    f"/tmp/ohifx/dbg-{ct.instance}.npz",
                    rgb=drawn.rgb,
                    truth=truth[name],
                    found=found[name],
                    canvas=np.frombuffer(base64.b64decode(px), np.uint8).reshape(h, w, 4),
                    o=drawn.origin,
                    u=drawn.col_step,
                    v=drawn.row_step,
                    hu=ct.hu,
                )
                problems.append(
                    f"slice {ct.instance}: {name} precision {precision:.2f} recall {recall:.2f}"
                )
    assert not problems, "\n".join(problems)


def boxes(annotations: Path, study: Study) -> list[tuple[CtSlice, tuple[int, int, int, int]]]:
    """The radiologists' boxes on this series: (slice, (xmin, ymin, xmax, ymax)) in pixels."""
    found = []
    for path in sorted(annotations.glob("*.xml")):
        ct = study.by_sop.get(path.stem)
        if ct is None:
            continue
        for box in ET.parse(path).iterfind(".//bndbox"):
            found.append(
                (ct, tuple(int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
            )
    return found


def test_boxed_lesions_are_drawn_inside_the_radiologists_boxes(
    ohif: OhifSession, study: Study, chest_ct_annotations: Path
) -> None:
    """Every lesion segment that meets a box is drawn inside it, on its best boxed slice."""
    classes = colour_classes(study)
    lesion_classes = [
        n
        for n, segs in classes.items()
        if not {s.type_code for s in segs} & {LEFT_LUNG, RIGHT_LUNG}
    ]
    assert len(lesion_classes) == 1, classes.keys()
    (lesion_class,) = lesion_classes
    all_boxes = boxes(chest_ct_annotations, study)
    assert all_boxes, "no box refers to a slice of this series"
    # for each lesion segment, the boxed slice where most of it lies inside the box
    best: dict[int, tuple[int, CtSlice, tuple[int, int, int, int]]] = {}
    for seg in classes[lesion_class]:
        for ct, (x0, y0, x1, y1) in all_boxes:
            mask = seg.masks.get(ct.sop)
            inside = 0 if mask is None else int(mask[y0 : y1 + 1, x0 : x1 + 1].sum())
            if inside and inside > best.get(seg.number, (0,))[0]:
                best[seg.number] = (inside, ct, (x0, y0, x1, y1))
    assert best, "no lesion segment meets a radiologist's box: nothing to check"
    for number, (_, ct, (x0, y0, x1, y1)) in sorted(best.items()):
        drawn = draw(ohif, ct)
        found = classify(drawn, classes)[lesion_class]
        seg = next(s for s in study.segments if s.number == number)
        # this lesion's pixels: the drawn lesion colour near this segment's own mask
        mine = found & ndimage.binary_dilation(seg.masks[ct.sop], iterations=8)
        in_box = np.zeros_like(mine)
        in_box[y0 : y1 + 1, x0 : x1 + 1] = True
        truth_inside = (seg.masks[ct.sop] & in_box).sum() / seg.masks[ct.sop].sum()
        drawn_inside = (mine & in_box).sum() / max(mine.sum(), 1)
        assert mine.sum() >= 0.8 * seg.masks[ct.sop].sum(), (seg.label, mine.sum())
        assert drawn_inside >= min(0.95, truth_inside - 0.02), (seg.label, drawn_inside)
        rows, cols = np.nonzero(mine)
        assert x0 <= cols.mean() <= x1 and y0 <= rows.mean() <= y1, (seg.label, ct.instance)
        shoot(ohif, f"seg-lesion-box-{number}", ct, (x0, y0, x1, y1))


def test_what_ohif_shows_of_our_sr(ohif: OhifSession, medvision_results: Results) -> None:
    """OHIF parses our volumetric TID 1500 report (sr.dcm) but lists none of its
    measurements (the planar SR is what it lists: the next test).

    OHIF 3.12 turns only measurement groups with a SCOORD/SCOORD3D graphic into
    measurements; ours are TID 1411 volumetric groups that reference the SEG's segments
    (volume, HU, axes, confidence as NUM items). It logs "Measurement is not rehydratable"
    for each group, shows "Measurements (0)", and, with the SEG already shown, an error
    toast (recorded, see docs/viewer-ohif.md). If this starts to fail, OHIF learned to
    show them: update docs/viewer-ohif.md.
    """
    page = ohif.page
    page.locator('[data-cy="study-browser-thumbnail-no-image"]', has_text="lung-ct SR").dblclick()
    page.wait_for_function(
        "() => window.services.displaySetService.getActiveDisplaySets()"
        ".some(d => d.Modality === 'SR' && d.isLoaded)",
        timeout=30_000,
    )
    page.locator('[data-cy="trackedMeasurements-btn"]').click()
    page.get_by_text("Measurements (0)").wait_for(timeout=15_000)
    toast = page.get_by_text("Something went wrong")
    try:
        toast.first.wait_for(timeout=5_000)
    except Exception:  # noqa: BLE001 - no toast is the better outcome
        pass
    else:
        text = toast.first.locator("xpath=..").inner_text()
        shoot(ohif, "sr-measurements")
        details = page.get_by_text("Show Details")
        if details.count():
            details.first.click()
            page.wait_for_timeout(500)
            text += " | " + page.locator("body").inner_text()[-1500:]
            # close the details dialog: it would take the clicks of the next test
            page.get_by_role("dialog").get_by_role("button", name="Close").first.click()
            page.get_by_role("dialog").wait_for(state="detached", timeout=10_000)
        ohif.log.notifications.append(" ".join(text.split()))
    report = page.evaluate(
        "() => { const d = window.services.displaySetService.getActiveDisplaySets()"
        ".find(d => d.Modality === 'SR' && d.SeriesDescription.startsWith('lung-ct SR'));"
        " return {report: d.isImagingMeasurementReport, groups: d.measurements.length,"
        " shown: window.services.measurementService.getMeasurements().length}; }"
    )
    if not ohif.log.notifications:
        shoot(ohif, "sr-measurements")
    n_findings = len(medvision_results.findings["findings"])
    assert report == {"report": True, "groups": n_findings, "shown": 0}, report
    not_shown = [w for w in ohif.log.console_logs if "Measurement is not rehydratable" in w]
    assert len(not_shown) == n_findings, not_shown


def key_slices(sr_path: Path) -> dict[str, str]:
    """Tracking UID -> SOP Instance UID of the image our volumetric SR says each lesion's
    long axis was measured on (the IMAGE under its Long Axis NUM)."""
    found = {}
    root = pydicom.dcmread(sr_path)
    containers = [root]
    while containers:
        item = containers.pop()
        children = list(item.get("ContentSequence", []))
        containers += [c for c in children if c.ValueType == "CONTAINER"]
        uid = next(
            (
                c.UID
                for c in children
                if c.ValueType == "UIDREF" and c.ConceptNameCodeSequence[0].CodeValue == "112040"
            ),
            None,
        )
        for c in children:
            if c.ValueType == "NUM" and c.ConceptNameCodeSequence[0].CodeValue == "103339001":
                (image,) = [i for i in c.ContentSequence if i.ValueType == "IMAGE"]
                found[uid] = str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return found


def _mm(a: list[float], b: list[float]) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def test_ohif_lists_every_lesion_with_its_axes(
    ohif: OhifSession, medvision_results: Results
) -> None:
    """Our planar SR: OHIF restores every lesion as a length-and-width measurement, labelled
    with our name for it, on the slice our SR names, its long axis within 1 mm of ours, and
    draws that long axis on the slice (measured back through the viewport's own mapping)."""
    page = ohif.page
    lesions = [f for f in medvision_results.findings["findings"] if f["kind"] == "lesion"]
    assert lesions, "the chest CT gave no lesion: nothing to check"
    keys = key_slices(medvision_results.sr)
    page.locator('[data-cy="study-browser-thumbnail-no-image"]', has_text="axes SR").dblclick()
    page.locator('[data-cy="yes-hydrate-btn"]').click(timeout=30_000)
    page.wait_for_function(
        "n => window.services.measurementService.getMeasurements().length >= n",
        arg=len(lesions),
        timeout=30_000,
    )
    shown = page.evaluate(
        "() => window.services.measurementService.getMeasurements().map(m => ({"
        " label: m.label, tool: m.toolName, sop: m.SOPInstanceUID, points: m.points,"
        " text: m.displayText }))"
    )
    assert len(shown) == len(lesions), [m["label"] for m in shown]
    by_label = {m["label"]: m for m in shown}
    assert set(by_label) == {f["tracking_id"] for f in lesions}
    # the panel lists them, by our names
    panel = page.get_by_text(f"Measurements ({len(lesions)})")
    if not panel.count():
        page.locator('[data-cy="trackedMeasurements-btn"]').click()
    panel.first.wait_for(timeout=15_000)
    listed = page.locator("body").inner_text()
    problems = []
    for finding in lesions:
        m, ours = by_label[finding["tracking_id"]], finding["measurements"]
        assert m["tool"] == "Bidirectional", m
        assert f"{finding['tracking_id']}" in listed
        long_mm, short_mm = _mm(*m["points"][:2]), _mm(*m["points"][2:])
        if m["sop"] != keys[finding["tracking_uid"]]:
            problems.append(f"{finding['tracking_id']}: on {m['sop']}, not its key slice")
        if abs(long_mm - ours["long_axis_mm"]) > 1.0:
            problems.append(
                f"{finding['tracking_id']}: long axis {long_mm:.1f} mm in OHIF, "
                f"{ours['long_axis_mm']:.1f} mm ours"
            )
        if abs(short_mm - ours["short_axis_mm"]) > 1.0:
            problems.append(
                f"{finding['tracking_id']}: short axis {short_mm:.1f} mm in OHIF, "
                f"{ours['short_axis_mm']:.1f} mm ours"
            )
        # what is drawn on the key slice: a solid line with the long axis' ends
        page.evaluate("sop => window.mvTest.go(sop)", m["sop"])
        page.evaluate("() => window.mvTest.frames()")
        lines = page.evaluate("() => window.mvTest.drawnLines()")
        ends = m["points"][:2]
        drawn = [
            line
            for line in lines
            if not line["dashed"]
            and max(
                min(_mm(line["a"], ends[0]), _mm(line["b"], ends[0])),
                min(_mm(line["a"], ends[1]), _mm(line["b"], ends[1])),
            )
            <= 1.0
        ]
        if not drawn:
            problems.append(f"{finding['tracking_id']}: no long axis drawn on its slice")
        print(
            finding["tracking_id"],
            "long axis mm: ours",
            round(ours["long_axis_mm"], 3),
            "OHIF",
            round(long_mm, 3),
            "drawn",
            [round(_mm(line["a"], line["b"]), 3) for line in drawn],
        )
        if drawn and abs(_mm(drawn[0]["a"], drawn[0]["b"]) - ours["long_axis_mm"]) > 1.0:
            problems.append(
                f"{finding['tracking_id']}: drawn long axis "
                f"{_mm(drawn[0]['a'], drawn[0]['b']):.1f} mm"
            )
    shoot(ohif, "sr-planar-measurements")
    assert not problems, "\n".join(problems)


def test_no_request_left_the_machine_and_no_error_was_logged(ohif: OhifSession) -> None:
    """Runs last: covers everything the page did in this module."""
    log = ohif.log
    assert ohif.server.dicomweb_requests > 0
    assert not log.blocked, f"requests to other hosts: {log.blocked[:5]}"
    errors = [e for e in log.console_errors if not any(b in e for b in BENIGN_CONSOLE_ERRORS)]
    assert not log.page_errors, log.page_errors
    assert not errors, errors
    print("timings", {k: round(v, 1) for k, v in log.timings.items()})
    print("console warnings", len(log.console_warnings), sorted(set(log.console_warnings))[:20])
    print("OHIF notifications", log.notifications)
