"""The PS3.15 Annex E basic profile and its options on real CT and MR files.

What a research site checks: no attribute of Table E.1-1 keeps its value (unless an
option says so), no private attribute survives outside the safe list, dciodvfy finds no
error the original did not have, and one patient gets one pseudonym in every study.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement

from medvision.deid import Deidentifier, DeidOptions, listed_action, pseudonym
from medvision.deid._tables import CLEAN_DESCRIPTORS, SAFE_PRIVATE
from tests.tools import dciodvfy_errors

SECRET = b"site-secret-for-tests-0123456789"
CT = "ct/lung-pet-ct-dx-A0001/series-5mm/1-01.dcm"
MR = "mr/philips-3t-brain/classic-t1/1301_0001.dcm"
DUMMIES = {"", "ANONYMIZED", "ANONYMOUS", "19000101", "000000", "19000101000000", "0"}


def _elements(ds: Dataset, path: tuple = ()) -> Iterator[tuple[tuple, DataElement]]:
    """Every element with its path (sequence tags and item indices) through the tree."""
    for elem in ds:
        here = (*path, int(elem.tag))
        yield here, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from _elements(item, (*here, i))


def _value(elem: DataElement) -> str:
    return "" if elem.value is None else str(elem.value)


def _check_profile(original: Dataset, out: Dataset, options: DeidOptions) -> int:
    """Assert the profile on every listed element of ``original``; return how many."""
    after = dict(_elements(out))
    identifiers = [str(original.PatientID), str(original.PatientName)]
    checked = 0
    for path, elem in _elements(original):
        if elem.tag.is_private:
            kept = after.get(path)
            if kept is not None and not options.retain_safe_private:
                pytest.fail(f"private {elem.tag} survived without Retain Safe Private")
            continue
        action = listed_action(elem.tag)
        if action is None or elem.VR == "SQ" or _value(elem) in DUMMIES:
            continue
        checked += 1
        new = after.get(path)
        if new is None or _value(new) in DUMMIES:
            continue  # removed, emptied or replaced by a dummy
        key = (elem.tag.group, elem.tag.element)
        if action == "U" and options.retain_uids:
            assert _value(new) == _value(elem)  # the option keeps UIDs
        elif options.clean_descriptors and key in CLEAN_DESCRIPTORS:
            for ident in identifiers:
                assert ident.lower() not in _value(new).lower(), (elem.tag, _value(new))
        else:
            assert _value(new) != _value(elem), f"{elem.tag} {elem.keyword} kept ({action})"
            if action == "U":
                assert _value(new).startswith("2.25."), (elem.tag, _value(new))
    return checked


@pytest.mark.parametrize("name", [CT, MR])
@pytest.mark.parametrize(
    "options",
    [
        DeidOptions(),
        DeidOptions(retain_safe_private=True, retain_uids=True, clean_descriptors=True),
    ],
    ids=["basic", "all-options"],
)
def test_table_e1_1_on_real_dicom(
    shared_data: Path, tmp_path: Path, name: str, options: DeidOptions
) -> None:
    source = shared_data / name
    original = dcmread(source)
    out = Deidentifier(SECRET, options).file(source)
    target = tmp_path / "out.dcm"
    out.save_as(target, enforce_file_format=True)
    written = dcmread(target)

    assert _check_profile(original, written, options) >= 15  # the files carry many listed tags
    assert written.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in written.DeidentificationMethodCodeSequence]
    expected = ["113100"] + (["113111", "113110", "113105"] if options.retain_safe_private else [])
    assert codes == expected
    assert written.file_meta.MediaStorageSOPInstanceUID == written.SOPInstanceUID
    assert written.PatientID == written.PatientName == pseudonym(SECRET, original.PatientID)
    assert original.PatientID not in target.read_bytes().decode("latin-1")
    # Z/D on a Type 2 text (the MR's, empty): emptied, no dummy claiming a contrast agent.
    if "ContrastBolusAgent" in original:
        assert not written.ContrastBolusAgent
    # Pixel data is untouched.
    assert written.PixelData == original.PixelData
    # dciodvfy: no error the original did not have (values masked: UIDs differ).
    mask = re.compile(r"<[^>]*>|\[\d+\]")
    before = {mask.sub("", e) for e in dciodvfy_errors(source)}
    new = [e for e in dciodvfy_errors(target) if mask.sub("", e) not in before]
    assert new == []


def test_safe_private_option_keeps_only_table_e3_10_1(shared_data: Path) -> None:
    source = shared_data / MR
    original = dcmread(source)
    assert any(e.tag.is_private for e in original)
    basic = Deidentifier(SECRET).file(source)
    assert [e.tag for e in basic if e.tag.is_private] == []
    safe = Deidentifier(SECRET, DeidOptions(retain_safe_private=True)).file(source)
    kept = [e for e in safe if e.tag.is_private and e.tag.element >= 0x1000]
    assert kept  # Philips' scale slope/intercept are in the table
    for elem in kept:
        creator = str(safe[elem.tag.group, elem.tag.element >> 8].value)
        assert (creator, elem.tag.group, elem.tag.element & 0xFF) in SAFE_PRIVATE
        assert elem.value == original[elem.tag].value


def test_clean_descriptors_keeps_cleaned_descriptions(shared_data: Path) -> None:
    source = shared_data / MR
    original = dcmread(source)
    original.SeriesDescription = f"T1 {original.PatientID} 20190304 3D"
    basic = Deidentifier(SECRET).dataset(copy.deepcopy(original))
    assert "SeriesDescription" not in basic
    cleaned = Deidentifier(SECRET, DeidOptions(clean_descriptors=True)).dataset(original)
    assert cleaned.SeriesDescription == "T1 3D"


def test_same_patient_same_pseudonym_across_studies(shared_data: Path) -> None:
    deid = Deidentifier(SECRET)
    first = dcmread(shared_data / CT)
    second = dcmread(shared_data / CT)  # the same patient, a later study
    second.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    second.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.78"
    a, b = deid.dataset(first), deid.dataset(second)
    assert a.PatientID == b.PatientID != dcmread(shared_data / CT).PatientID
    assert a.StudyInstanceUID != b.StudyInstanceUID  # two studies stay two studies
    other = deid.dataset(dcmread(shared_data / MR))
    assert other.PatientID != a.PatientID
    # The key matters: another site's secret gives another pseudonym and other UIDs.
    elsewhere = Deidentifier(b"another-site-secret-0123456789ab").file(shared_data / CT)
    assert elsewhere.PatientID != a.PatientID
    assert elsewhere.SOPInstanceUID != a.SOPInstanceUID
    # Patients without an ID are not merged into one pseudonym.
    blank = [dcmread(shared_data / CT) for _ in range(2)]
    for i, ds in enumerate(blank):
        ds.PatientID = ""
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.9{i}"
    assert deid.dataset(blank[0]).PatientID != deid.dataset(blank[1]).PatientID
    # And the mapping is deterministic: the same input gives the same output every time.
    again = Deidentifier(SECRET).file(shared_data / CT)
    assert (again.PatientID, again.SOPInstanceUID) == (a.PatientID, a.SOPInstanceUID)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Deidentifier(b"short").dataset(Dataset())


@pytest.mark.parametrize(
    "name",
    [
        "seg-sr/tid1500/examples/dcmqi/result.dcm",
        "seg-sr/tid1500/examples/rsna2018_dataset1/sr-tid1500-ct-liver-example.dcm",
        "seg-sr/tid1500/examples/rsna2018_dataset4/1.dcm",
        "seg-sr/highdicom/data/test_files/seg_image_ct_binary.dcm",
    ],
)
def test_structured_reports_and_seg_stay_valid(
    shared_data: Path, tmp_path: Path, name: str
) -> None:
    """Other producers' TID 1500 SRs and a SEG: the content tree is walked (names, dates,
    UIDs inside it handled), and dciodvfy finds no new error."""
    source = shared_data / name
    original = dcmread(source)
    target = tmp_path / "out.dcm"
    Deidentifier(SECRET).file(source).save_as(target, enforce_file_format=True)
    written = dcmread(target)
    assert _check_profile(original, written, DeidOptions()) >= 5
    mask = re.compile(r"<[^>]*>|\[\d+\]")
    before = {mask.sub("", e) for e in dciodvfy_errors(source)}
    assert [e for e in dciodvfy_errors(target) if mask.sub("", e) not in before] == []
