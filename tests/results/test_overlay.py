"""Secondary Capture overlays and their KOS, on the real chest CT and the real pipeline.

The lung-ct pipeline runs once for the module (about 15 s) and ``write_results(...,
overlays=True)`` writes everything once; every test reads the files back from disk, so
what is checked is what a PACS would receive. Pixel expectations (windowing, colours) are
computed here independently of the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from highdicom.color import CIELabColor
from scipy import ndimage

import medvision.pipelines
from medvision.dicom import Volume, load_series, scan
from medvision.errors import ResultError
from medvision.findings import Finding, FindingKind, Findings
from medvision.results import ResultFiles, build_kos, build_overlays, write_results
from medvision.results._overlay import BANNER_RGB, banner_height

from .conftest import LESION_LABEL, ORGAN_LABEL, dciodvfy, make_finding, make_findings, sphere

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
KOS_STORAGE = "1.2.840.10008.5.1.4.1.1.88.59"
LUNG_WINDOW = (-600.0, 1500.0)
FILL_ALPHA = 0.4


@pytest.fixture(scope="module")
def pipeline_findings(chest_volume: Volume) -> Findings:
    findings = medvision.pipelines.get("lung-ct").run(chest_volume)
    assert findings.lesions, "the real chest CT should give at least one lesion"
    return findings


@pytest.fixture(scope="module")
def files(pipeline_findings: Findings, tmp_path_factory: pytest.TempPathFactory) -> ResultFiles:
    return write_results(pipeline_findings, tmp_path_factory.mktemp("ov"), overlays=True)


@pytest.fixture(scope="module")
def overlays(files: ResultFiles) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in files.overlay_paths]


@pytest.fixture(scope="module")
def kos(files: ResultFiles) -> pydicom.Dataset:
    assert files.kos_path is not None
    return pydicom.dcmread(files.kos_path)


def slice_of(findings: Findings, overlay: pydicom.Dataset) -> int:
    uid = overlay.SourceImageSequence[0].ReferencedSOPInstanceUID
    return findings.volume.sop_instance_uids.index(uid)


def grey(volume: Volume, k: int) -> np.ndarray:
    centre, width = LUNG_WINDOW
    return np.clip(
        np.rint(((volume.array[k].astype(np.float64) - centre) / width + 0.5) * 255), 0, 255
    )


def colour(finding: Finding) -> np.ndarray:
    assert finding.label.cielab is not None
    return np.array(CIELabColor.from_dicom_value(finding.label.cielab).to_rgb(clip=True))


def test_every_overlay_and_the_kos_pass_dciodvfy(files: ResultFiles) -> None:
    assert files.overlay_paths and files.kos_path is not None
    for path in (*files.overlay_paths, files.kos_path):
        errors, _ = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"


def test_overlays_are_labelled_derived_sc_in_the_source_study(
    overlays: list[pydicom.Dataset], pipeline_findings: Findings, files: ResultFiles
) -> None:
    volume = pipeline_findings.volume
    source = volume.source_headers[0]
    assert {str(o.SeriesInstanceUID) for o in overlays} == {files.overlay_series_instance_uid}
    assert files.overlay_series_instance_uid not in {
        volume.series_instance_uid,
        files.seg_series_instance_uid,
        files.sr_series_instance_uid,
    }
    assert [int(o.InstanceNumber) for o in overlays] == list(range(1, len(overlays) + 1))
    for o in overlays:
        assert o.SOPClassUID == SC_STORAGE
        assert o.StudyInstanceUID == volume.study_instance_uid
        assert o.PatientID == source.PatientID
        assert int(o.SeriesNumber) == 903
        assert list(o.ImageType) == ["DERIVED", "SECONDARY"]
        assert o.BurnedInAnnotation == "YES"
        assert o.ConversionType == "WSD"
        assert o.Manufacturer == "medvision"
        assert "not verified" in o.SeriesDescription
        assert "not verified" in o.ImageComments and "lung-ct 1.1" in o.ImageComments
        assert (o.PhotometricInterpretation, o.SamplesPerPixel, o.BitsAllocated) == ("RGB", 3, 8)
        assert (o.Rows, o.Columns) == volume.shape[1:]
        for seq in (o.SourceImageSequence, o.ReferencedImageSequence):
            assert len(seq) == 1
            assert seq[0].ReferencedSOPInstanceUID in volume.sop_instance_uids
            assert seq[0].ReferencedSOPClassUID == source.SOPClassUID
        assert o.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"


def test_one_overlay_per_lesion_long_axis_and_centroid_slice(
    overlays: list[pydicom.Dataset], pipeline_findings: Findings
) -> None:
    expected = set()
    for lesion in pipeline_findings.lesions:
        expected |= {lesion.measurements.centroid_slice, lesion.measurements.long_axis_slice}
    shown = [slice_of(pipeline_findings, o) for o in overlays]
    assert shown == sorted(expected)


def test_lesion_is_burned_in_and_the_rest_is_the_windowed_source(
    overlays: list[pydicom.Dataset], pipeline_findings: Findings
) -> None:
    by_slice = {slice_of(pipeline_findings, o): o.pixel_array.astype(int) for o in overlays}
    volume = pipeline_findings.volume
    for lesion in pipeline_findings.lesions:
        k = lesion.measurements.long_axis_slice
        assert k is not None
        rgb, base = by_slice[k], grey(volume, k)
        mask = lesion.mask[k]
        # Inside: the translucent fill of the lesion's colour over the grey image, except
        # where the long axis and the label cross it.
        interior = ndimage.binary_erosion(mask, iterations=1)
        expected = np.rint((1 - FILL_ALPHA) * base[..., None] + FILL_ALPHA * colour(lesion))
        hits = np.all(np.abs(rgb[interior] - expected[interior]) <= 1, axis=-1)
        assert interior.sum() > 0 and hits.mean() > 0.8, (lesion.tracking_id, hits.mean())
        outline = mask & ~ndimage.binary_erosion(mask)
        on_outline = np.all(rgb[outline] == colour(lesion), axis=-1)
        assert on_outline.mean() > 0.8, (lesion.tracking_id, on_outline.mean())
        # Outside every drawing (segments, lesion labels, banner): the untouched grey slice.
        drawn = np.zeros(mask.shape, dtype=bool)
        for f in pipeline_findings.items:
            plane = f.mask[k]
            drawn |= ndimage.binary_dilation(plane & ~ndimage.binary_erosion(plane), iterations=2)
            if f.label.kind is FindingKind.LESION and plane.any():
                js = np.flatnonzero(plane.any(axis=1))
                drawn |= ndimage.binary_dilation(plane, iterations=4)
                drawn[max(js.min() - 4, 0) : max(js.max(), js.min() + 20) + 6] = True
        drawn[: banner_height(volume.shape[2])] = True
        outside = ~drawn
        assert outside.sum() > 0.5 * outside.size
        differ = np.argwhere(outside & np.any(rgb != base[..., None], axis=-1))
        assert differ.size == 0, (lesion.tracking_id, k, differ[:5].tolist())


def test_every_overlay_carries_the_banner(overlays: list[pydicom.Dataset]) -> None:
    for o in overlays:
        rgb = o.pixel_array
        band = rgb[: banner_height(int(o.Columns))]
        assert np.all(rgb[:2] == BANNER_RGB), "top rows are the banner colour"
        assert np.all(band[:, -3:] == BANNER_RGB), "the band spans the full width"
        assert (band.sum(axis=-1) < 200).sum() > 200, "the banner holds dark text"
        below = rgb[banner_height(int(o.Columns)) + 1]
        assert not np.all(below == BANNER_RGB)


def test_kos_references_exactly_the_overlays(
    kos: pydicom.Dataset,
    overlays: list[pydicom.Dataset],
    pipeline_findings: Findings,
    files: ResultFiles,
) -> None:
    assert kos.SOPClassUID == KOS_STORAGE
    assert kos.StudyInstanceUID == pipeline_findings.volume.study_instance_uid
    assert kos.SeriesInstanceUID == files.kos_series_instance_uid
    assert kos.SOPInstanceUID == files.kos_sop_instance_uid
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"
    overlay_uids = {str(o.SOPInstanceUID) for o in overlays}
    assert overlay_uids == set(files.overlay_sop_instance_uids)
    evidence = {
        str(sop.ReferencedSOPInstanceUID)
        for study in kos.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert evidence == overlay_uids
    images = {
        str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for item in kos.ContentSequence
        if item.ValueType == "IMAGE"
    }
    assert images == overlay_uids
    doc = hd.ko.KeyObjectSelectionDocument.from_dataset(kos)
    for overlay in overlays:
        assert doc.resolve_reference(str(overlay.SOPInstanceUID)) == (
            str(overlay.StudyInstanceUID),
            str(overlay.SeriesInstanceUID),
            str(overlay.SOPInstanceUID),
        )


def test_everything_reads_back_and_json_lists_it(
    files: ResultFiles, pipeline_findings: Findings
) -> None:
    for path in files.overlay_paths:
        image = hd.imread(str(path))
        assert image.pixel_array.shape[-1] == 3
    doc = json.loads(files.json_path.read_text())
    assert [e["file"] for e in doc["overlays"]] == [p.name for p in files.overlay_paths]
    assert [p.name for p in files.overlay_paths][:2] == ["overlay-01.dcm", "overlay-02.dcm"]
    assert [e["sop_instance_uid"] for e in doc["overlays"]] == list(files.overlay_sop_instance_uids)
    assert doc["kos"]["file"] == "kos.dcm"
    assert doc["kos"]["sop_instance_uid"] == files.kos_sop_instance_uid
    for entry in doc["overlays"]:
        k = entry["slice"]
        assert entry["source_sop_instance_uid"] == pipeline_findings.volume.sop_instance_uids[k]
        assert entry["segment_numbers"] == [
            f.number for f in pipeline_findings.items if f.mask[k].any()
        ]


def test_overlays_are_off_by_default(written: ResultFiles, written_json: dict) -> None:
    assert written.overlay_paths == () and written.kos_path is None
    assert "overlays" not in written_json and "kos" not in written_json


def test_organ_only_result_gets_a_few_representative_slices(chest_volume: Volume) -> None:
    box = np.zeros(chest_volume.shape, dtype=bool)
    box[20:44, 150:330, 280:430] = True
    organ = make_finding(chest_volume, 1, ORGAN_LABEL, box, "Left lung")
    images = build_overlays(make_findings(chest_volume, (organ,)), window=(40.0, 400.0))
    assert 1 <= len(images) <= 5
    ks = [
        chest_volume.sop_instance_uids.index(i.SourceImageSequence[0].ReferencedSOPInstanceUID)
        for i in images
    ]
    assert all(20 <= k < 44 for k in ks) and organ.measurements.centroid_slice in ks
    for image, k in zip(images, ks, strict=True):
        rgb = image.pixel_array
        assert np.all(rgb[150, 300] == colour(organ))  # on the box's top edge
        centre, width = 40.0, 400.0  # the window asked for, not the lung default
        value = np.clip(
            np.rint(((chest_volume.array[k, 250, 350] - centre) / width + 0.5) * 255), 0, 255
        )
        assert np.all(rgb[250, 350] == value)
    kos = build_kos(make_findings(chest_volume, (organ,)), images, include_source=True)
    sources = {i.SourceImageSequence[0].ReferencedSOPInstanceUID for i in images}
    referenced = {
        str(sop.ReferencedSOPInstanceUID)
        for series in kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert referenced == {str(i.SOPInstanceUID) for i in images} | sources


def test_nothing_to_overlay_is_a_clear_error(chest_volume: Volume) -> None:
    with pytest.raises(ResultError, match="No findings to overlay"):
        build_overlays(make_findings(chest_volume, ()))
    with pytest.raises(ResultError, match="No overlay images"):
        build_kos(make_findings(chest_volume, ()), [])


def test_multiframe_enhanced_source_references_the_frame(shared_data: Path, tmp_path: Path) -> None:
    (study,) = scan(shared_data / "mr" / "philips-3t-brain" / "enhanced")
    series = [s for s in study.series if not s.problems and s.num_frames > 1][0]
    volume = load_series(series)
    mask = sphere(volume.shape, (20, 48, 48), 12.0, volume.spacing)
    findings = make_findings(volume, (make_finding(volume, 1, LESION_LABEL, mask, "Lesion 1"),))
    images = build_overlays(findings)  # MR: the source's window, not the CT lung window
    m = findings.items[0].measurements
    slices = sorted({m.centroid_slice, m.long_axis_slice})
    refs = [image.SourceImageSequence[0] for image in images]
    assert [r.ReferencedSOPInstanceUID for r in refs] == [volume.sop_instance_uids[0]] * len(slices)
    assert [int(r.ReferencedFrameNumber) for r in refs] == [volume.frame_numbers[k] for k in slices]
    kos = build_kos(findings, images, include_source=True)
    images[0].save_as(tmp_path / "overlay.dcm", enforce_file_format=True)
    kos.save_as(tmp_path / "kos.dcm", enforce_file_format=True)
    for path in (tmp_path / "overlay.dcm", tmp_path / "kos.dcm"):
        errors, _ = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"
