"""One full run of lung-ct on the real chest CT per test session (about 10 s on 2 cores)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from medvision.dicom import Volume, load_series, scan
from medvision.findings import Findings
from medvision.pipelines import get


@pytest.fixture(scope="session")
def chest_ct_volume(chest_ct_dir: Path) -> Volume:
    (study,) = scan(chest_ct_dir)
    return load_series(study.series[0])


@pytest.fixture(scope="session")
def lung_ct_findings(chest_ct_volume: Volume) -> Findings:
    stages: list[tuple[str, float]] = []
    findings = get("lung-ct").run(chest_ct_volume, lambda s, f: stages.append((s, f)))
    assert stages[0] == ("lungs", 0.0) and stages[-1] == ("done", 1.0)
    return findings


@pytest.fixture(scope="session")
def tumour_boxes(chest_ct_annotations: Path, chest_ct_volume: Volume) -> dict[int, tuple[int, ...]]:
    """Slice index k → (xmin, ymin, xmax, ymax) of the radiologists' box on that slice."""
    boxes = {}
    for k, uid in enumerate(chest_ct_volume.sop_instance_uids):
        path = chest_ct_annotations / f"{uid}.xml"
        if path.exists():
            box = ET.parse(path).getroot().find("object/bndbox")
            assert box is not None
            boxes[k] = tuple(int(box.findtext(t, "0")) for t in ("xmin", "ymin", "xmax", "ymax"))
    return boxes
