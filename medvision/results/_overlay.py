"""Findings -> Secondary Capture overlay images, for viewers that cannot show a DICOM SEG.

Why at all: many PACS viewers still cannot display a SEG, and a result nobody can see is no
result. So, *in addition to* the SEG and SR (never instead of them: STANDARDS AIR-04), the
node can send plain RGB Secondary Capture images in which the findings are burned into a
copy of the source slice. Because burned-in pixels have no machine-readable meaning and
outlive every caveat a viewer might show next to them, each image carries its own caveat
in the pixels: a banner "AI result, not verified" (or "Computer-generated result" for a
classical algorithm, see ``_codes.generated_by``) with the algorithm name and version
(AIR-05). The same words are in SeriesDescription and ImageComments.

Choices:

* Plain Secondary Capture Image Storage (one slice per instance, 8-bit RGB), the SC class
  that every PACS and viewer stores and shows. Same study, new series (default 903).
* Slices: for lesions, each lesion's long-axis slice and centroid slice; for an organ-only
  result, each organ's centroid slice and the quartiles of the organs' extent.
* Pixels: the source slice windowed to grey (CT default: lung window -600/1500), organs as
  a 1-pixel outline, lesions as a translucent fill with a solid outline, in the segment's
  recommended colour (the same CIELab value the SEG recommends). Each lesion is labelled
  with its tracking id; on its long-axis slice the long axis is drawn and its length given.
* The image keeps the source's rows, columns and pixel spacing, so a pixel of the overlay
  is the same point of the patient as that pixel of the source; the banner is drawn over
  the top rows (on CT usually air or table) rather than changing the image size.
* References: SourceImageSequence (purpose "Source image for image processing operation")
  and ReferencedImageSequence name the source slice, so a viewer can jump between them.
* Text is drawn with Pillow, which scikit-image already requires (no new dependency).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours

from medvision.errors import ResultError
from medvision.findings import Finding, FindingKind, Findings, slice_number
from medvision.results._codes import display_color, generated_by, truncate
from medvision.results._device import DeviceInfo, algorithm_equipment
from medvision.results._inherit import check_same_study, no_phi_warnings, sanitize_headers

logger = logging.getLogger(__name__)

DEFAULT_OVERLAY_SERIES_NUMBER = 903
#: Lung window (centre, width) in HU: the lesions the CT pipelines report sit in the lung.
CT_LUNG_WINDOW = (-600.0, 1500.0)
#: Amber banner with black text: reads as a caution on every display, and no segment
#: palette entry is this exact colour.
BANNER_RGB = (255, 176, 0)
BANNER_TEXT_RGB = (0, 0, 0)
#: The long axis is drawn in white over the lesion's colour.
AXIS_RGB = (255, 255, 255)
#: Opacity of a lesion's fill; organs get an outline only, so the lung stays readable.
FILL_ALPHA = 0.4
#: (121322, DCM) "Source image for image processing operation" (CID 7202).
_SOURCE_PURPOSE = hd.sr.CodedConcept("121322", "DCM", "Source image for image processing operation")
_MAX_ORGAN_SLICES = 5


def banner_text(findings: Findings) -> str:
    """The caution in the first banner line: AI only for a trained model (see _codes)."""
    kind = "AI" if findings.algorithm.family == "AI" else "Computer-generated"
    return f"{kind} result, not verified"


def overlay_slices(findings: Findings) -> list[int]:
    """Slice indices k to show: lesion long-axis and centroid slices, else organ samples."""
    if not findings.items:
        raise ResultError("No findings to overlay: overlays need at least one segment.")
    slices: set[int] = set()
    for lesion in findings.lesions:
        m = lesion.measurements
        slices.add(int(m.centroid_slice))
        if m.long_axis_slice is not None:
            slices.add(int(m.long_axis_slice))
    if not slices:
        occupied = np.flatnonzero(
            np.any([f.mask.any(axis=(1, 2)) for f in findings.organs], axis=0)
        )
        picks = [int(f.measurements.centroid_slice) for f in findings.organs]
        picks += [int(occupied[int(q * (len(occupied) - 1))]) for q in (0.25, 0.5, 0.75)]
        slices = set(list(dict.fromkeys(picks))[:_MAX_ORGAN_SLICES])
    return sorted(slices)


def default_window(findings: Findings) -> tuple[float, float]:
    """CT: the lung window. Otherwise the source's own window, else the 1-99 % range."""
    if findings.volume.modality.upper() == "CT":
        return CT_LUNG_WINDOW
    header = findings.volume.source_headers[0] if findings.volume.source_headers else None
    if header is not None and "WindowCenter" in header and "WindowWidth" in header:
        centre, width = header.WindowCenter, header.WindowWidth
        centre = centre[0] if isinstance(centre, Sequence) else centre
        width = width[0] if isinstance(width, Sequence) else width
        if float(width) > 0:
            return float(centre), float(width)
    lo, hi = np.percentile(findings.volume.array, [1.0, 99.0])
    return float((lo + hi) / 2.0), float(max(hi - lo, 1.0))


def windowed(plane: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Linear window to 0..255 (PS3.3 C.11.2.1.2.1, continuous form)."""
    centre, width = window
    if width <= 0:
        raise ResultError(f"Window width must be positive, got {width}.")
    scaled = (plane.astype(np.float64) - centre) / width + 0.5
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def segment_rgb(finding: Finding) -> tuple[int, int, int]:
    """The SEG's recommended display colour of this segment, as 8-bit RGB (gamut-clipped)."""
    r, g, b = display_color(finding.label.cielab, finding.number).to_rgb(clip=True)
    return int(r), int(g), int(b)


def long_axis_endpoints(plane: np.ndarray, spacing_ij: tuple[float, float]) -> np.ndarray:
    """The two contour points (x=i, y=j, in pixels) farthest apart in mm on one slice.

    Same method as ``findings.measure`` (0.5 iso-contour, largest distance), so the drawn
    line matches the reported length.
    """
    contours = find_contours(np.pad(plane.astype(np.float32), 1), 0.5)
    ji = np.concatenate(contours, axis=0) - 1.0
    mm = ji[:, ::-1] * np.asarray(spacing_ij)
    if len(mm) > 64:
        try:
            keep = ConvexHull(mm).vertices
            ji, mm = ji[keep], mm[keep]
        except QhullError:
            pass
    dist = np.linalg.norm(mm[:, None, :] - mm[None, :, :], axis=-1)
    a, b = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return ji[[a, b]][:, ::-1]


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _fit(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    width: float,
) -> str:
    while len(text) > 4 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "~"
    return text


def render_overlay(findings: Findings, k: int, window: tuple[float, float]) -> np.ndarray:
    """RGB uint8 (rows, columns, 3) of slice k with every segment on it burned in."""
    volume = findings.volume
    grey = windowed(volume.array[k], window)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    on_slice = [f for f in findings.items if f.mask[k].any()]
    # Organs first, so a lesion inside an organ is drawn on top of the organ's outline.
    on_slice.sort(key=lambda f: (f.label.kind is FindingKind.LESION, f.number))
    for finding in on_slice:
        plane = finding.mask[k]
        colour = np.asarray(segment_rgb(finding), dtype=np.float64)
        if finding.label.kind is FindingKind.LESION:
            blend = (1.0 - FILL_ALPHA) * rgb[plane] + FILL_ALPHA * colour
            rgb[plane] = np.rint(blend).astype(np.uint8)
        rgb[plane & ~ndimage.binary_erosion(plane)] = colour.astype(np.uint8)

    rows, columns = grey.shape
    image = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(image)
    size = _font_size(columns)
    font = _font(size)
    spacing_ij = (float(volume.spacing[0]), float(volume.spacing[1]))
    for finding in on_slice:
        if finding.label.kind is not FindingKind.LESION:
            continue
        m = finding.measurements
        text = finding.tracking_id
        if m.long_axis_slice == k and m.long_axis_mm is not None:
            (x0, y0), (x1, y1) = long_axis_endpoints(finding.mask[k], spacing_ij)
            draw.line([(x0, y0), (x1, y1)], fill=AXIS_RGB, width=1)
            for x, y in ((x0, y0), (x1, y1)):
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=AXIS_RGB)
            text = f"{text}: {m.long_axis_mm:.1f} mm"
        js, is_ = np.nonzero(finding.mask[k])
        width = draw.textlength(text, font=font)
        x = is_.max() + 6 if is_.max() + 6 + width < columns else max(is_.min() - 6 - width, 0)
        y = min(max(float(js.min()), 0.0), rows - size - 2)
        draw.text(
            (x, y),
            text,
            fill=segment_rgb(finding),
            font=font,
            stroke_width=1,
            stroke_fill=(0, 0, 0),
        )

    line = size + 4
    banner_h = banner_height(columns)
    draw.rectangle([0, 0, columns - 1, banner_h - 1], fill=BANNER_RGB)
    algorithm = findings.algorithm
    first = f"{banner_text(findings).upper()}: {algorithm.name} {algorithm.version}"
    names = ", ".join(f.tracking_id for f in on_slice)
    second = f"Slice {slice_number(k)}/{volume.shape[0]}; {names}"
    for n, text in enumerate((first, second)):
        draw.text(
            (4, 3 + n * line), _fit(draw, text, font, columns - 8), fill=BANNER_TEXT_RGB, font=font
        )
    return np.asarray(image, dtype=np.uint8)


def _font_size(columns: int) -> int:
    return max(10, columns // 40)


def banner_height(columns: int) -> int:
    """Rows at the top of an overlay that the banner covers (two lines of text)."""
    return 2 * (_font_size(columns) + 4) + 4


def _patient_orientation(direction: np.ndarray) -> tuple[str, str]:
    """Row and column directions as the nearest patient axis letters (L/R, P/A, H/F)."""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))

    def letter(vector: np.ndarray) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return letters[axis][int(vector[axis] > 0)]

    return letter(direction[:, 0]), letter(direction[:, 1])


def _source_reference(header: Dataset, frame: int, purpose: bool) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    if int(header.get("NumberOfFrames", 1) or 1) > 1:
        item.ReferencedFrameNumber = frame
    if purpose:
        item.PurposeOfReferenceCodeSequence = [_SOURCE_PURPOSE]
    return item


@no_phi_warnings()
def build_overlays(
    findings: Findings,
    *,
    window: tuple[float, float] | None = None,
    series_number: int = DEFAULT_OVERLAY_SERIES_NUMBER,
    device: DeviceInfo | None = None,
) -> list[Dataset]:
    """One RGB Secondary Capture per slice with findings (see :func:`overlay_slices`).

    ``window`` is (centre, width) in the volume's units; the default is the lung window for
    CT (see :func:`default_window`). Raises :class:`ResultError` with a one-line reason.
    """
    device = device or DeviceInfo()
    slices = overlay_slices(findings)
    window = window or default_window(findings)
    volume = findings.volume
    cleaned, _ = sanitize_headers(volume.source_headers)
    if not cleaned:
        raise ResultError("The volume carries no source headers; cannot reference the source.")
    check_same_study(cleaned)
    by_uid = {str(h.SOPInstanceUID): h for h in cleaned}
    algorithm = findings.algorithm
    caution = banner_text(findings)
    series_uid = hd.UID()
    orientation = _patient_orientation(volume.direction)
    overlays: list[Dataset] = []
    for number, k in enumerate(slices, start=1):
        try:
            header = by_uid[volume.sop_instance_uids[k]]
        except KeyError:
            raise ResultError("Volume names a SOP instance that has no source header.") from None
        pixels = render_overlay(findings, k, window)
        shown = [f for f in findings.items if f.mask[k].any()]
        try:
            sc = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=header,
                pixel_array=pixels,
                photometric_interpretation="RGB",
                bits_allocated=8,
                coordinate_system="PATIENT",
                series_instance_uid=series_uid,
                series_number=series_number,
                sop_instance_uid=hd.UID(),
                instance_number=number,
                manufacturer=device.manufacturer,
                manufacturer_model_name=device.model_name,
                software_versions=device.software_version,
                device_serial_number=device.serial_number,
                institution_name=device.institution_name,
                series_description=truncate(
                    f"{algorithm.name} overlay ({generated_by(algorithm)})", 64
                ),
                pixel_spacing=(float(volume.spacing[1]), float(volume.spacing[0])),
                patient_orientation=orientation,
                transfer_syntax_uid=ExplicitVRLittleEndian,
                contributing_equipment=[algorithm_equipment(algorithm)],
            )
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ResultError(f"Could not build an overlay image: {reason}") from exc
        frame = int(volume.frame_numbers[k])
        # Laterality is Type 2C in General Series (paired body parts only): copy the
        # source's (often empty, i.e. unknown) value where it has one, never invent one.
        if "Laterality" in header:
            sc.Laterality = header.Laterality
        if header.get("BodyPartExamined"):
            sc.BodyPartExamined = header.BodyPartExamined
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.ConversionType = "WSD"
        sc.BurnedInAnnotation = "YES"
        sc.LossyImageCompression = "01" if header.get("LossyImageCompression") == "01" else "00"
        sc.SourceImageSequence = [_source_reference(header, frame, purpose=True)]
        sc.ReferencedImageSequence = [_source_reference(header, frame, purpose=False)]
        sc.DerivationDescription = truncate(
            f"Source slice windowed to grey (centre {window[0]:g}, width {window[1]:g}) with "
            f"{algorithm.name} {algorithm.version} segments burned in",
            1024,
        )
        sc.ImageComments = truncate(
            f"{caution} ({algorithm.name} {algorithm.version}). Shows "
            + "; ".join(f"{f.tracking_id} (segment {f.number})" for f in shown),
            10240,
        )
        overlays.append(sc)
    logger.info("Built %d overlay image(s)", len(overlays))
    return overlays


def overlay_slice_index(findings: Findings, overlay: Dataset) -> int:
    """The volume slice k an overlay shows, from its SourceImageSequence."""
    ref = overlay.SourceImageSequence[0]
    frame = int(ref.get("ReferencedFrameNumber", 1))
    uid = str(ref.ReferencedSOPInstanceUID)
    volume = findings.volume
    for k, (slice_uid, slice_frame) in enumerate(
        zip(volume.sop_instance_uids, volume.frame_numbers, strict=True)
    ):
        if slice_uid == uid and int(slice_frame) == frame:
            return k
    raise ResultError("Overlay references a source image that is not in the volume.")


__all__ = [
    "BANNER_RGB",
    "CT_LUNG_WINDOW",
    "DEFAULT_OVERLAY_SERIES_NUMBER",
    "banner_height",
    "banner_text",
    "build_overlays",
    "default_window",
    "overlay_slice_index",
    "overlay_slices",
    "render_overlay",
    "segment_rgb",
    "windowed",
]
