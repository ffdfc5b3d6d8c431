"""Real studies that lung-ct must refuse or leave alone, each for its own reason.

Built from the shared real files (read-only) into a temp folder with pydicom; the offline
tests (``medvision run``) and the node tests (the assembler's study reason) use the same
cases and expect the same words, because one function (``Pipeline.select``) produces both.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydicom import dcmread

#: case -> the reason lung-ct gives (a prefix of it), and whether it is a refusal
#: (lung-ct applies but cannot analyse) or "does not apply".
EXPECTED: dict[str, tuple[str, bool]] = {
    "duplicate-positions": (
        "lung-ct refused the study: series 1 (CT): duplicate slice positions (1 in all; "
        "the first at -90.00 mm along the normal, CT26.dcm and CT28.dcm)",
        True,
    ),
    "no-pixel-data": (
        "lung-ct refused the study: series 2 (CT): missing pixel data in 1 of 24 instance(s)",
        True,
    ),
    "single-slice": (
        "lung-ct refused the study: series 2 (CT): a single slice, not a volume",
        True,
    ),
    "scout": (
        "lung-ct does not apply: localizer/scout image (ImageType ORIGINAL/PRIMARY/LOCALIZER) "
        "(series 100 (CT))",
        False,
    ),
}


def build_edge_studies(shared_data: Path, out: Path) -> dict[str, Path]:
    """case name -> a folder holding that one study."""
    chest = sorted((shared_data / "ct/lung-pet-ct-dx-A0001/series-5mm").glob("*.dcm"))
    edge = shared_data / "ct/edge"
    folders = {name: out / name for name in EXPECTED}
    shutil.copytree(edge / "duplicate-positions", folders["duplicate-positions"])
    folders["no-pixel-data"].mkdir(parents=True)
    for i, path in enumerate(chest[20:44]):
        ds = dcmread(path)
        if i == 5:
            del ds.PixelData  # one instance sent without its pixels
        ds.save_as(folders["no-pixel-data"] / path.name, enforce_file_format=True)
    folders["single-slice"].mkdir(parents=True)
    shutil.copy(chest[30], folders["single-slice"])
    shutil.copytree(edge / "philips-head-phantom-study" / "S1000", folders["scout"])
    return folders


def study_uid(folder: Path) -> str:
    from medvision.dicom import scan

    (study,) = scan(folder)
    return study.study_instance_uid
