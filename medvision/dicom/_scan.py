"""Find DICOM instances on disk and group them into studies and series, reading headers only.

Scanning is what a pipeline chooses from, so it must be cheap (headers only, no pixel
decoding) and must never crash on odd input: unreadable files are skipped, blank UIDs and
non-image objects are recorded as :attr:`SeriesInfo.problems` and refused later, at load
time, with a typed error. Gzipped files are not read: a PACS never sends them (see
docs/dicom-input.md).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from medvision.dicom._attrs import numbers, text
from medvision.dicom._geometry import orientation_label
from medvision.dicom._series import SeriesInfo, StudyInfo
from medvision.errors import InputError, NoDicomFound

log = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_PREAMBLE_LEN = 128
#: Stands for the series in the loader's messages, which scanning strips off again.
_LABEL = "<series>"


def scan(path: str | os.PathLike[str]) -> list[StudyInfo]:
    """Every study under ``path`` (a file or a folder, searched recursively).

    Studies come sorted by study date then UID, their series by series number. Raises
    :class:`NoDicomFound` if no readable DICOM instance is there.
    """
    root = Path(path)
    if not root.exists():
        raise NoDicomFound(f"No DICOM found: {root} does not exist.")
    groups: dict[tuple[str, str], list[tuple[Path, Dataset, bool]]] = defaultdict(list)
    seen = skipped = 0
    for file in _walk(root):
        seen += 1
        read = _read_header(file)
        if read is None:
            skipped += 1
            continue
        ds, has_pixels = read
        study = text(ds, "StudyInstanceUID")
        series = text(ds, "SeriesInstanceUID")
        # Without a series UID, keep files of one folder together so they can be named.
        key = (study, series or f"<blank>{file.parent}")
        groups[key].append((file, ds, has_pixels))
    log.debug("scanned %d files, %d not DICOM instances", seen, skipped)
    if not groups:
        what = "no files" if seen == 0 else f"none of {seen} file(s) is a readable DICOM instance"
        raise NoDicomFound(f"No DICOM found under {root}: {what}.")

    by_study: dict[str, list[SeriesInfo]] = defaultdict(list)
    study_headers: dict[str, Dataset] = {}
    for (study, _), members in groups.items():
        members.sort(key=lambda m: (_instance_number(m[1]), str(m[0])))
        by_study[study].append(_series_info(members))
        study_headers.setdefault(study, members[0][1])

    studies = []
    for study, series in by_study.items():
        series.sort(
            key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid)
        )
        ds = study_headers[study]
        studies.append(
            StudyInfo(
                study_instance_uid=study,
                series=tuple(series),
                patient_id=_text(ds, "PatientID"),
                study_date=_text(ds, "StudyDate"),
                study_description=_text(ds, "StudyDescription"),
                accession_number=_text(ds, "AccessionNumber"),
            )
        )
    studies.sort(key=lambda s: (s.study_date, s.study_instance_uid))
    return studies


def read_header(file: Path) -> Dataset | None:
    """The header of one DICOM instance, or None for anything else (DICOMDIR included)."""
    read = _read_header(file)
    return None if read is None else read[0]


def _read_header(file: Path) -> tuple[Dataset, bool] | None:
    """(header, whether pixel data follows it), or None for anything but an instance.

    Reading stops before the pixel data, so the file position tells whether any follows:
    at the end of the file there was none.
    """
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            head = fh.read(_PREAMBLE_LEN + 4)
            if head[_PREAMBLE_LEN:] != b"DICM":
                # Raw dataset without a preamble: accept only if it starts with a plausible
                # group (0002 meta, 0008 identification); never force-read arbitrary files.
                if head[:2] not in (b"\x02\x00", b"\x08\x00"):
                    return None
                fh.seek(0)
                ds = dcmread(fh, stop_before_pixels=True, force=True)
            else:
                fh.seek(0)
                ds = dcmread(fh, stop_before_pixels=True)
            has_pixels = fh.tell() < size
    except (
        InvalidDicomError,
        OSError,
        ValueError,
        EOFError,
        KeyError,
        TypeError,
        # Sequences nested a few hundred deep (a malformed or hostile file) exhaust
        # pydicom's recursion: that file is unreadable, not the whole scan.
        RecursionError,
    ) as err:
        log.debug("skipping unreadable file: %s", type(err).__name__)
        return None
    meta = getattr(ds, "file_meta", None)
    media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if media_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return None
    if "SOPClassUID" not in ds and "StudyInstanceUID" not in ds and "SeriesInstanceUID" not in ds:
        return None
    return ds, has_pixels


def sop_class_of(ds: Dataset) -> str:
    """The SOP class, falling back to the file meta's copy when the dataset's is blank."""
    sop = text(ds, "SOPClassUID")
    if not sop and getattr(ds, "file_meta", None) is not None:
        sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    return sop


def is_image_class(sop_class_uid: str) -> bool:
    """True for every '... Image Storage' SOP class (not SR, SEG, raw data, states...)."""
    if not sop_class_uid:
        return True  # unknown: decided at load time from the pixel data
    name = UID(sop_class_uid).name
    return (
        name.endswith("Image Storage")
        or name.endswith("Image Storage - For Presentation")
        or name.endswith("Image Storage - For Processing")
    )


def _series_info(members: list[tuple[Path, Dataset, bool]]) -> SeriesInfo:
    first = members[0][1]
    problems: list[str] = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        blank = sum(1 for _, ds, _ in members if not text(ds, keyword))
        if blank:
            problems.append(f"blank or missing {keyword} in {blank} of {len(members)} instance(s)")
    sop_classes = {sop_class_of(ds) for _, ds, _ in members}
    sop = sop_class_of(first)
    is_image = all(is_image_class(s) for s in sop_classes)
    if not is_image:
        names = sorted(UID(s).name for s in sop_classes if not is_image_class(s))
        problems.append(f"not an image: {', '.join(names)}")
    if len(sop_classes) > 1:
        problems.append(f"mixed SOP classes ({len(sop_classes)})")
    found = [_orientation(ds) for _, ds, _ in members]
    orientations = {o for o in found if o is not None}
    unplaced = sum(1 for o in found if o is None)
    labels = {orientation_label(o) for o in orientations}
    if len(orientations) > 1:
        problems.append(f"mixed orientations ({len(orientations)} different)")
    label = labels.pop() if len(labels) == 1 else ("" if not labels else "OBLIQUE")
    if is_image and unplaced:
        problems.append(
            f"no ImageOrientationPatient in {unplaced} of {len(members)} instance(s) "
            "(not placed in space)"
        )
    frames = sum(_int(ds.get("NumberOfFrames")) or 1 for _, ds, _ in members)
    spacing = None
    if is_image and not problems:
        spacing, problem = _stack_check(members)
        problems += [problem] if problem else []
    return SeriesInfo(
        study_instance_uid=text(first, "StudyInstanceUID"),
        series_instance_uid=text(first, "SeriesInstanceUID"),
        modality=text(first, "Modality"),
        sop_class_uid=sop,
        files=tuple(path for path, _, _ in members),
        series_number=_int(first.get("SeriesNumber")),
        series_description=_text(first, "SeriesDescription"),
        body_part_examined=_text(first, "BodyPartExamined"),
        image_type=tuple(str(v) for v in _as_list(first.get("ImageType"))),
        orientation=label,
        slice_thickness_mm=_float(_slice_thickness(first)),
        slice_spacing_mm=spacing,
        num_frames=frames if is_image else 0,
        rows=_int(first.get("Rows")),
        columns=_int(first.get("Columns")),
        is_image=is_image,
        problems=tuple(problems),
    )


def _stack_check(members: list[tuple[Path, Dataset, bool]]) -> tuple[float | None, str]:
    """(slice spacing, "") or (None, why the headers do not form a volume).

    The loader's own checks (:func:`~medvision.dicom._load.check_headers`), run on the
    headers already read: a pipeline then refuses a series with duplicate positions or no
    pixel data for that reason, not for whatever header rule happens to come first.
    """
    from medvision.dicom._load import check_headers  # the loader imports this module

    try:
        stack, _ = check_headers(
            [ds for _, ds, _ in members],
            tuple(path for path, _, _ in members),
            _LABEL,
            has_pixels=[pixels for _, _, pixels in members],
        )
    except InputError as err:
        return None, str(err).removeprefix(f"{_LABEL}: ").rstrip(".")
    return (stack.spacing[2] if len(stack.order) > 1 else None), ""


def _orientation(ds: Dataset) -> tuple[float, ...] | None:
    """ImageOrientationPatient, also from an Enhanced object's functional groups."""
    iop: object = numbers(ds, "ImageOrientationPatient")
    if iop is None:
        for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            groups = ds.get(seq)
            if groups and "PlaneOrientationSequence" in groups[0]:
                iop = groups[0].PlaneOrientationSequence[0].get("ImageOrientationPatient")
                break
    try:
        values = tuple(round(float(v), 4) for v in _as_list(iop))
    except (TypeError, ValueError):
        return None
    return values if len(values) == 6 else None


def _slice_thickness(ds: Dataset) -> object:
    if ds.get("SliceThickness") not in (None, ""):
        return ds.SliceThickness
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(seq)
        if groups and "PixelMeasuresSequence" in groups[0]:
            return groups[0].PixelMeasuresSequence[0].get("SliceThickness")
    return None


def _walk(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.upper() == "DICOMDIR":
                continue
            yield Path(dirpath) / name


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _as_list(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)  # type: ignore[call-overload]


def _int(value: object) -> int | None:
    try:
        return None if value in (None, "") else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _float(value: object) -> float | None:
    try:
        return None if value in (None, "") else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _instance_number(ds: Dataset) -> int:
    number = _int(ds.get("InstanceNumber"))
    return number if number is not None else 0


__all__ = ["is_image_class", "read_header", "scan", "sop_class_of"]
