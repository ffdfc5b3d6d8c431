"""The node's study reason (issue 11, items 1-2): only what matters, in ``medvision run``'s words.

Real edge cases are put in the spool as the SCP would, with the user's model folder holding
imported MR pipelines (brainchop); the assembler must queue only the pipelines that apply,
and a study nothing analyses must fail with the reason ``medvision run`` gives, without the
"modality CT, needs MR" clauses of pipelines made for another modality.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database, Job, Study, utcnow
from medvision.node._assembler import complete_quiet_studies
from medvision.node._ingest import Received, index_instance
from medvision.node._spool import StoredFile
from medvision.pipelines import available
from tests.edge_studies import EXPECTED, build_edge_studies, study_uid


@pytest.fixture(scope="module")
def edge_studies(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_edge_studies(shared_data, tmp_path_factory.mktemp("edge"))


@pytest.fixture(scope="module")
def mr_models(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medvision.pipelines.brainchop import import_brainchop

    models = tmp_path_factory.mktemp("models")
    assert import_brainchop(shared_data / "models" / "brainchop", models)
    return models


@pytest.fixture()
def settings(tmp_path: Path, mr_models: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MEDVISION_MODELS_DIR", str(mr_models))
    names = available()
    assert "lung-ct" in names and any(n.startswith("brainchop") for n in names)
    return Settings(data_dir=tmp_path, quiet_period_s=0.01, pipelines=names)


def _assemble(db: Database, settings: Settings, folder: Path) -> tuple[Study, list[str]]:
    """Spool ``folder`` as one received study, let it go quiet, run the assembler."""
    uid = study_uid(folder)
    shutil.copytree(folder, settings.spool_dir / uid)
    # Short series/SOP UIDs of our own: the real study UID + ".1.1" would pass 64 characters,
    # which PostgreSQL's VARCHAR(64) refuses.
    item = Received(uid, "2.25.1", "2.25.1.1", "1.2.840.10008.5.1.4.1.1.2", "PACS", "::1")
    index_instance(db, item, StoredFile(f"{uid}/x.dcm", 1, "0" * 64, created=True))
    with db.session() as session:
        study = session.scalars(select(Study)).one()
        study.last_received_at = utcnow() - timedelta(seconds=60)
    assert complete_quiet_studies(settings, db, DbAuditLog(db)) == [uid]
    with db.session() as session:
        study = session.scalars(select(Study)).one()
        jobs = [j.pipeline for j in session.scalars(select(Job))]
    return study, jobs


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_study_reason_is_the_real_cause(
    case: str, db: Database, settings: Settings, edge_studies: dict[str, Path]
) -> None:
    reason, refused = EXPECTED[case]
    study, jobs = _assemble(db, settings, edge_studies[case])
    assert study.state == "failed" and jobs == []
    if refused:
        assert study.reason == reason, study.reason  # the MR pipelines' clauses stay out
    else:
        # Nothing applies: each pipeline's rule is named, lung-ct's first (sorted names).
        assert study.reason.startswith("no pipeline applies: brainchop"), study.reason
        assert reason in study.reason


def test_ct_study_gets_only_the_ct_job(
    db: Database, settings: Settings, chest_ct_dir: Path
) -> None:
    study, jobs = _assemble(db, settings, chest_ct_dir)
    assert (study.state, study.reason, jobs) == ("queued", "", ["lung-ct"])
