"""Everything written for a viewer: a DICOM SEG, a TID 1500 SR and findings.json.

Optionally also a planar TID 1500 SR with each lesion's axes drawn on its key slice (for
web viewers such as OHIF), and Secondary Capture overlays with the findings burned in and
a KOS that flags them, for viewers without SEG support (extras, never instead of SEG and
SR).

One :class:`~medvision.findings.Findings` goes in; the three outputs describe the very same
findings and point at each other (tracking UIDs, referenced segments, SOP Instance UIDs).
See ``docs/results.md`` for the codes and the conformance choices.
"""

from medvision.results._codes import display_color
from medvision.results._device import DeviceInfo, algorithm_device_uid
from medvision.results._kos import build_kos
from medvision.results._overlay import build_overlays
from medvision.results._planar_sr import build_planar_sr
from medvision.results._seg import build_seg
from medvision.results._sr import build_sr
from medvision.results._write import ResultFiles, findings_json, save_dicom, write_results

__all__ = [
    "DeviceInfo",
    "ResultFiles",
    "algorithm_device_uid",
    "build_kos",
    "build_overlays",
    "build_planar_sr",
    "build_seg",
    "build_sr",
    "display_color",
    "findings_json",
    "save_dicom",
    "write_results",
]
