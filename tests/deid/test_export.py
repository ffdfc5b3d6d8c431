"""``medvision export --reviewed``: de-identified reviewed cases whose SEG still
references its images (read back with highdicom), and nothing of unreviewed cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.sr.codedict import codes

from medvision.cli import main
from medvision.db import Database, Feedback, Instance, Job, JobState, Study, StudyState
from medvision.deid import pseudonym
from tests.tools import dciodvfy_errors

SECRET = b"export-site-secret-0123456789abc"


def _case(data: Path, ct_dir: Path, first: int, study_uid: str) -> tuple[list[Path], Path]:
    """Three real CT slices in the spool under a study of their own, and a highdicom SEG."""
    spool = data / "spool" / study_uid
    spool.mkdir(parents=True)
    images = []
    for i, src in enumerate(sorted(ct_dir.glob("*.dcm"))[first : first + 3]):
        ds = dcmread(src)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = study_uid + ".1"
        ds.SOPInstanceUID = f"{study_uid}.1.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(spool / f"{i}.dcm")
        images.append(spool / f"{i}.dcm")
    sources = [dcmread(p) for p in images]
    mask = np.zeros((3, sources[0].Rows, sources[0].Columns), dtype=bool)
    mask[:, 200:260, 200:260] = True
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="lesion",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Neoplasm,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name="test", version="1", family=codes.DCM.ArtificialIntelligence
                ),
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medvision",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    results = data / "results" / study_uid
    results.mkdir(parents=True)
    seg.save_as(results / "seg.dcm")
    return images, results


def test_export_reviewed_cases(tmp_path: Path, chest_ct_dir: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "deid.key").write_bytes(SECRET)
    config = tmp_path / "medvision.toml"
    config.write_text(f'data_dir = "{data}"\n[deid]\nsecret_file = "{tmp_path / "deid.key"}"\n')
    data.mkdir()
    db = Database(f"sqlite:///{data / 'medvision.db'}")
    db.create_schema()
    patient = str(dcmread(next(chest_ct_dir.glob("*.dcm"))).PatientID)
    reviewed_uid, other_uid = "1.2.826.0.1.3680043.8.498.31", "1.2.826.0.1.3680043.8.498.32"
    with db.session() as session:
        for n, uid in enumerate((reviewed_uid, other_uid)):
            images, results = _case(data, chest_ct_dir, 20 + 3 * n, uid)
            session.add(Study(study_instance_uid=uid, state=StudyState.DONE, instance_count=3))
            for p in images:
                ds = dcmread(p, stop_before_pixels=True)
                session.add(
                    Instance(
                        sop_instance_uid=str(ds.SOPInstanceUID),
                        study_instance_uid=uid,
                        series_instance_uid=str(ds.SeriesInstanceUID),
                        sop_class_uid=str(ds.SOPClassUID),
                        path=str(p.relative_to(data / "spool")),
                        size=p.stat().st_size,
                        sha256="0" * 64,
                    )
                )
            session.add(
                Job(
                    study_instance_uid=uid,
                    study_version=1,
                    pipeline="lung-ct",
                    state=JobState.DONE,
                    result_dir=str(results),
                )
            )
        session.add(
            Feedback(kind="decision", study_instance_uid=reviewed_uid, decision="accept", user="r")
        )
    db.dispose()

    out = tmp_path / "export"
    assert main(["export", "--config", str(config), "--out", str(out), "--reviewed"]) == 0

    case_dirs = [p for p in out.iterdir() if p.is_dir()]
    assert [p.name for p in case_dirs] == [pseudonym(SECRET, patient)]
    (study_dir,) = case_dirs[0].iterdir()
    images = [dcmread(p) for p in sorted((study_dir / "images").iterdir())]
    (seg_path,) = (study_dir / "results").iterdir()
    assert len(images) == 3
    for ds in images:
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientID == pseudonym(SECRET, patient)
        assert not str(ds.StudyInstanceUID).startswith("1.2.826.0.1.3680043.8.498.3")
    # The SEG still references exactly the exported images, and highdicom reads it.
    seg = hd.seg.segread(seg_path)
    referenced = {
        str(ref.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for ref in series.ReferencedInstanceSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in images}
    assert seg.StudyInstanceUID == images[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == images[0].FrameOfReferenceUID
    assert seg.get_source_image_uids()
    assert seg.PatientID == images[0].PatientID
    assert dciodvfy_errors(seg_path) == []
    # The unreviewed study is not exported; a plain export takes both.
    assert main(["export", "--config", str(config), "--out", str(tmp_path / "all")]) == 0
    assert len(list((tmp_path / "all" / pseudonym(SECRET, patient)).iterdir())) == 2
    shutil.rmtree(out)
