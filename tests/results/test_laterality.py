"""Coded laterality of sided structures in the SEG, the SR and findings.json.

TotalSegmentator's labels are sided by name (``kidney_left``); the code for Kidney says
nothing about the side. A reader that filters on codes (a PACS query, an SR consumer, dcmqi)
must find the side coded, as TotalSegmentator's own SNOMED CT mapping writes it: a sided
organ gets a SegmentedPropertyTypeModifier (Kidney + Left), a lesion with an anatomic
region gets an AnatomicRegionModifier (Cyst in Kidney + Right); in the SR, the finding site
carries the Laterality modifier (TID 1419).
"""

from __future__ import annotations

import json

import highdicom as hd
import pydicom
import pytest

from medvision.findings import Code, FindingKind, Label
from medvision.results import write_results
from tests.results.conftest import make_finding, make_findings, sphere
from tests.tools import dciodvfy

KIDNEY = Code("64033007", "SCT", "Kidney")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
KIDNEY_LEFT = Label(
    name="kidney_left",
    category=Code("91723000", "SCT", "Anatomical Structure"),
    type=KIDNEY,
    kind=FindingKind.ORGAN,
    laterality=LEFT,
)
CYST_RIGHT = Label(
    name="kidney_cyst_right",
    category=Code("49755003", "SCT", "Morphologically Altered Structure"),
    type=Code("367643001", "SCT", "Cyst"),
    kind=FindingKind.LESION,
    site=KIDNEY,
    laterality=RIGHT,
)


@pytest.fixture(scope="module")
def written(chest_volume, tmp_path_factory: pytest.TempPathFactory):
    v = chest_volume
    items = (
        make_finding(v, 1, KIDNEY_LEFT, sphere(v.shape, (30, 250, 350), 10.0, v.spacing), "kL"),
        make_finding(v, 2, CYST_RIGHT, sphere(v.shape, (40, 250, 150), 6.0, v.spacing), "cR"),
    )
    return write_results(make_findings(v, items), tmp_path_factory.mktemp("sided"))


def _code(item) -> tuple[str, str]:
    return (item.CodeValue, item.CodingSchemeDesignator)


def test_seg_codes_the_side_of_organ_and_of_lesion_site(written):
    seg = pydicom.dcmread(written.seg_path)
    organ, cyst = seg.SegmentSequence
    assert _code(organ.SegmentedPropertyTypeCodeSequence[0]) == ("64033007", "SCT")
    assert [_code(m) for m in organ.SegmentedPropertyTypeModifierCodeSequence] == [
        ("7771000", "SCT")
    ]
    assert "AnatomicRegionSequence" not in organ
    assert "SegmentedPropertyTypeModifierCodeSequence" not in cyst
    [region] = cyst.AnatomicRegionSequence
    assert _code(region) == ("64033007", "SCT")
    assert [_code(m) for m in region.AnatomicRegionModifierSequence] == [("24028007", "SCT")]
    assert dciodvfy(written.seg_path)[0] == []


def test_sr_finding_sites_carry_laterality_as_findings_json_does(written):
    sr = hd.sr.srread(written.sr_path)
    doc = json.loads(written.json_path.read_text())
    sides = {f["tracking_id"]: f["laterality"]["value"] for f in doc["findings"]}
    assert sides == {"kL": "7771000", "cR": "24028007"}
    groups = {
        str(g.tracking_identifier): g for g in sr.content.get_volumetric_roi_measurement_groups()
    }
    [organ_site] = groups["kL"].finding_sites
    assert organ_site.value.value == "64033007" and organ_site.laterality.value == "7771000"
    [cyst_site] = groups["cR"].finding_sites
    assert cyst_site.value.value == "64033007" and cyst_site.laterality.value == "24028007"
    assert dciodvfy(written.sr_path)[0] == []
