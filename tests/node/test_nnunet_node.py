"""Issue 13: an nnU-Net v2 model imported by ``medvision models import nnunet`` runs in the node.

As a site does it (docs/models.md): the tiny nnU-Net fixture is imported with the CLI into a
models folder of its own, ``medvision serve`` runs with that folder as
``MEDVISION_MODELS_DIR`` and only that pipeline enabled, and Orthanc pushes a synthetic CT
series to it. What a PACS administrator and a physicist then check: the job is done, Orthanc
holds one SEG and one SR in the study, the SEG's labels equal ``nnUNetPredictor``'s own
prediction voxel for voxel on the source grid (the same check as ``medvision run``'s, in
tests/pipelines/nnunet/reference.py), and the audit trail names the job's pipeline and its
version and passes ``medvision audit verify --config``.

The model is imported with ``--no-mirroring`` (one network pass per tile), so the whole round
trip stays well under a minute on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from medvision.audit import DbAuditLog
from medvision.db import Database
from tests.node.models_node import ModelsNode
from tests.node.peers import NodeProcess, Orthanc, node_with_orthanc, wait_for
from tests.pipelines.nnunet.reference import assert_seg_equals_nnunet, require_nnunet
from tests.pipelines.nnunet.synthetic import AXIAL, write_series
from tests.pipelines.nnunet.test_import import FIXTURE
from tests.test_cli import medvision

#: The default name ``models import nnunet`` gives the tiny model (``nnunet-<dataset>``).
NAME = "nnunet-tinyspheres"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_nnunet()
    folder = tmp_path_factory.mktemp("models")
    result = medvision("models", "import", "nnunet", str(FIXTURE), "--no-mirroring", models=folder)
    assert result.returncode == 0, result.stderr
    listed = medvision("models", "list", models=folder)
    assert listed.returncode == 0 and NAME in listed.stdout, listed.stdout + listed.stderr
    return folder


@pytest.fixture
def pacs_and_node(models: Path, tmp_path: Path) -> Iterator[tuple[Orthanc, NodeProcess]]:
    """Orthanc and a node running only the imported pipeline (lung-ct etc. would also
    accept the CT and cost minutes)."""
    node = ModelsNode(tmp_path / "medvision-data", models)
    orthanc, node = node_with_orthanc(tmp_path, node, pipelines=[NAME], retry_initial_s=1)
    orthanc.start()
    try:
        yield orthanc, node
    finally:
        node.stop()
        orthanc.stop()


def test_imported_nnunet_model_runs_in_the_node_and_equals_nnunet(
    pacs_and_node: tuple[Orthanc, NodeProcess], tmp_path: Path
) -> None:
    orthanc, node = pacs_and_node
    series, uids, affine = write_series(AXIAL, tmp_path / "study")
    files = sorted(series.glob("*.dcm"))
    first = dcmread(files[0], stop_before_pixels=True)
    uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    node.start()
    orthanc.push("medvision", orthanc.upload(files))

    def sent() -> bool:
        study = node.study(uid)
        assert study is None or study["state"] not in ("failed", "send-failed"), study
        return study is not None and study["state"] == "sent"

    try:
        wait_for(f"study {uid} to be sent back", sent, 180, 0.2)
    except TimeoutError as err:
        raise AssertionError(f"{err}; jobs: {node.get('/jobs')}") from None

    (job,) = node.get("/jobs")
    assert (job["state"], job["pipeline"]) == ("done", NAME), job
    assert job["series_instance_uid"] == series_uid

    found = orthanc.instances_by_modality(uid)
    assert [len(found.get("SEG", [])), len(found.get("SR", []))] == [1, 1], found
    seg_path = tmp_path / "seg-from-orthanc.dcm"
    seg_path.write_bytes(orthanc.get_bytes(f"/instances/{found['SEG'][0]['ID']}/file"))
    seg = dcmread(seg_path)
    assert seg.StudyInstanceUID == uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    ours = assert_seg_equals_nnunet(
        seg_path, series, uids, AXIAL, affine, tmp_path / "nnunet", mirroring=False
    )
    assert {1, 2} <= set(ours.ravel().tolist())

    # The audit trail: the job's start and end, naming the pipeline and the algorithm
    # version that the SEG itself carries.
    identification = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    db = Database(f"sqlite:///{node.data_dir / 'medvision.db'}")
    try:
        events = [e for e in DbAuditLog(db).events() if e.get("job_id") == job["id"]]
    finally:
        db.dispose()
    by_type = {e["type"]: e for e in events}
    assert {"job.started", "job.finished"} <= set(by_type), [e["type"] for e in events]
    assert by_type["job.started"]["pipeline"] == NAME
    finished = by_type["job.finished"]
    assert (finished["pipeline"], finished["outcome"]) == (NAME, "success")
    algorithm = finished["algorithm"]
    assert algorithm["name"] == NAME == identification.AlgorithmName
    assert algorithm["version"] == identification.AlgorithmVersion
    assert algorithm["parameters"]["runtime"] == "nnunetv2 nnUNetPredictor"
    assert str(seg.SOPInstanceUID) in finished["results"]

    config = tmp_path / "medvision.toml"
    config.write_text(f'data_dir = "{node.data_dir}"\nae_title = "{node.ae_title}"\n')
    verify = medvision("audit", "verify", "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "chain intact" in verify.stdout
