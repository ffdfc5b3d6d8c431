"""Slices and overlays as PNG, rendered on the server from the spooled series and the SEG.

Why on the server: the browser gets small 8-bit PNGs it can show with a plain ``<img>``, so
the viewer needs no WebGL, no DICOM parser and no build step, loads in well under a second
and can be tested by fetching URLs. The price is a round trip per slice and per window
change (~25 ms on the real 64-slice CT), which is fine for reviewing findings.

A decoded study stays in a small in-memory LRU (:class:`VolumeCache`): the first request
decodes the series (~1 s), every slice after that is one windowing and one PNG encode.
The CT is kept as int16 and the SEG as one bit per segment, so a 64-slice 512² study costs
~40 MB and the cache's byte bound keeps a few studies at most.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.multival import MultiValue

from medvision.dicom import Volume, load_series, scan
from medvision.results import display_color

#: Named windows (centre, width) in HU, the usual chest CT presets.
PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}
#: The grey range of the automatic window: these percentiles of the whole volume.
AUTO_PERCENTILES = (1.0, 99.5)


@dataclass(frozen=True)
class Segment:
    """One SEG segment as the viewer needs it: number, name, colour, where it is."""

    number: int
    label: str
    rgb: tuple[int, int, int]
    #: Slice indices (k) of the volume on which the segment has at least one voxel.
    slices: tuple[int, ...]
    #: "organ" or "lesion" (from findings.json); organs are drawn fainter.
    kind: str = "lesion"


@dataclass(eq=False)
class Study3D:
    """A decoded series (int16 CT numbers) and, if there is one, its SEG as bit planes."""

    pixels: np.ndarray  # [k, j, i] int16 (HU for CT: rescale already applied)
    sop_instance_uids: tuple[str, ...]
    modality: str
    default_window: tuple[float, float]
    #: The windows the viewer offers, by name, the default's first; CT: the chest CT
    #: presets in HU; other modalities (MR signal has no fixed scale): the scanner's
    #: DICOM window when the series has one, and one computed from the volume.
    presets: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(PRESETS))
    #: uint8/16/32/64 bit field [k, j, i]: bit (n-1) set where segment n is present.
    seg_bits: np.ndarray | None = None
    segments: dict[int, Segment] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes + (self.seg_bits.nbytes if self.seg_bits is not None else 0)

    @property
    def slices(self) -> int:
        return int(self.pixels.shape[0])


def load_study3d(
    series_dir: Path, series_uid: str, seg_path: Path | None, kinds: dict[int, str] | None = None
) -> Study3D:
    """Decode the series in ``series_dir`` and the SEG at ``seg_path`` (optional).

    ``kinds`` maps segment numbers to "organ"/"lesion" (findings.json's ``kind``).
    """
    series = next(
        (s for st in scan(series_dir) for s in st.series if s.series_instance_uid == series_uid),
        None,
    )
    if series is None:
        raise FileNotFoundError("the analysed series is no longer in the spool")
    volume = load_series(series)
    pixels = np.clip(np.rint(volume.array), -32768, 32767).astype(np.int16)
    presets = window_presets(volume)
    study = Study3D(
        pixels=pixels,
        sop_instance_uids=volume.sop_instance_uids,
        modality=volume.modality,
        default_window=next(iter(presets.values())),
        presets=presets,
    )
    if seg_path is not None and seg_path.is_file():
        study.seg_bits, study.segments = read_seg(seg_path, volume, kinds or {})
    return study


def window_presets(volume: Volume) -> dict[str, tuple[float, float]]:
    """The named windows for ``volume``, the default first (see :attr:`Study3D.presets`)."""
    if volume.modality == "CT":
        return dict(PRESETS)
    presets = {}
    dicom = dicom_window(volume)
    if dicom is not None:
        presets["dicom"] = dicom
    presets["auto"] = auto_window(volume.array)
    return presets


def auto_window(array: np.ndarray) -> tuple[float, float]:
    """A window spanning the volume's 1st to 99.5th percentile: background black, the
    brightest tissue just below white, whatever the scanner's scale."""
    lo, hi = np.percentile(array[::2, ::2, ::2], AUTO_PERCENTILES)
    return float((lo + hi) / 2), float(max(hi - lo, 1.0))


def dicom_window(volume: Volume) -> tuple[float, float] | None:
    """The scanner's WindowCenter/WindowWidth (the first pair of each instance or frame,
    median over the series: Philips sets one per slice), or None when none is given."""
    pairs = []
    for header in volume.source_headers:
        items = [header]
        for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            for fg in getattr(header, group, None) or []:
                items += list(getattr(fg, "FrameVOILUTSequence", None) or [])
        for item in items:
            centre, width = item.get("WindowCenter"), item.get("WindowWidth")
            if centre is None or width is None:
                continue
            centre = centre[0] if isinstance(centre, MultiValue) else centre
            width = width[0] if isinstance(width, MultiValue) else width
            if float(width) >= 1:
                pairs.append((float(centre), float(width)))
            break
    if not pairs:
        return None
    centres, widths = zip(*pairs, strict=True)
    return float(np.median(centres)), float(np.median(widths))


def read_seg(
    seg_path: Path, volume: Volume, kinds: dict[int, str] | None = None
) -> tuple[np.ndarray, dict[int, Segment]]:
    """A BINARY SEG on the volume's grid, one bit per segment, and each segment's colour.

    Frames are placed by the source image each one derives from (DerivationImageSequence),
    the reference our SEGs always carry; a frame whose source is not in the volume is
    skipped rather than guessed.
    """
    seg = dcmread(seg_path)
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    n_segments = len(seg.SegmentSequence)
    dtype = next(
        t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if np.iinfo(t).bits >= n_segments
    )
    bits = np.zeros(volume.shape, dtype=dtype)
    index = {
        (uid, fr): k
        for k, (uid, fr) in enumerate(
            zip(volume.sop_instance_uids, volume.frame_numbers, strict=True)
        )
    }
    present: dict[int, set[int]] = {}
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        try:
            source = item.DerivationImageSequence[0].SourceImageSequence[0]
        except (AttributeError, IndexError):
            continue
        frame_no = int(getattr(source, "ReferencedFrameNumber", 1) or 1)
        k = index.get((str(source.ReferencedSOPInstanceUID), frame_no))
        if k is None or frames[f].shape != bits.shape[1:]:
            continue
        mask = frames[f].astype(bool)
        if mask.any():
            bits[k][mask] |= dtype(1 << (number - 1))
            present.setdefault(number, set()).add(k)
    segments = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        lab = getattr(item, "RecommendedDisplayCIELabValue", None)
        # The SEG's colour unless it would vanish on the grey slice (a white "white
        # matter"): then the same palette entry our own SEGs use for that segment.
        rgb = display_color(tuple(int(v) for v in lab) if lab else None, number).to_rgb(clip=True)
        segments[number] = Segment(
            number=number,
            label=str(getattr(item, "SegmentLabel", f"Segment {number}")),
            rgb=tuple(int(c) for c in rgb),
            slices=tuple(sorted(present.get(number, ()))),
            kind=(kinds or {}).get(number, "lesion"),
        )
    return bits, segments


def window_png(study: Study3D, k: int, centre: float, width: float) -> bytes:
    """Slice ``k`` windowed to 8-bit grey, as PNG (fast zlib level: these are transient).

    The window is a 64 Ki-entry lookup table indexed by the int16 value: one gather per
    pixel instead of float arithmetic, about three times faster on a 512² slice.
    """
    width = max(width, 1.0)
    lo = centre - width / 2
    values = np.arange(-32768, 32768, dtype=np.float32)
    lut = np.clip((values - lo) * (255.0 / width), 0, 255).astype(np.uint8)
    grey = lut[study.pixels[k].astype(np.int32) + 32768]
    return _png(Image.fromarray(grey, mode="L"))


def overlay_png(study: Study3D, k: int, segments: set[int] | None = None) -> bytes:
    """Segments on slice ``k`` as an RGBA PNG; transparent where there is nothing.

    Lesions are a translucent fill (alpha 160) with a solid outline, organs only a faint
    fill (alpha 40) with a solid outline, so the lung parenchyma stays readable. The
    client's opacity slider scales the whole layer.
    """
    rows, cols = study.pixels.shape[1:]
    rgba = np.zeros((rows, cols, 4), dtype=np.uint8)
    if study.seg_bits is not None:
        plane = study.seg_bits[k]
        # Organs first, lesions on top, so a lesion inside a lung keeps its own colour.
        for seg in sorted(study.segments.values(), key=lambda s: (s.kind != "organ", s.number)):
            if segments is not None and seg.number not in segments:
                continue
            if k not in seg.slices:
                continue
            mask = (plane & plane.dtype.type(1 << (seg.number - 1))) != 0
            edge = mask & ~_erode(mask)
            fill_alpha = 40 if seg.kind == "organ" else 160
            rgba[mask] = (*seg.rgb, fill_alpha)
            rgba[edge] = (*seg.rgb, 255)
    return _png(Image.fromarray(rgba, mode="RGBA"))


def _erode(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class VolumeCache:
    """A small thread-safe LRU of decoded studies, bounded by count and by bytes.

    Loading happens outside the lock per key, so two users opening two studies decode in
    parallel, while two requests for the same study wait for one decode.
    """

    def __init__(self, max_items: int = 4, max_bytes: int = 1 << 30) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Study3D] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, key: str, load: Callable[[], Study3D]) -> Study3D:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = load()
            with self._lock:
                self._items[key] = value
                self._loading.pop(key, None)
                self._evict()
            return value

    def _evict(self) -> None:
        while len(self._items) > 1 and (
            len(self._items) > self.max_items
            or sum(v.nbytes for v in self._items.values()) > self.max_bytes
        ):
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


__all__ = [
    "PRESETS",
    "auto_window",
    "dicom_window",
    "Segment",
    "Study3D",
    "VolumeCache",
    "load_study3d",
    "overlay_png",
    "read_seg",
    "window_presets",
    "window_png",
]
