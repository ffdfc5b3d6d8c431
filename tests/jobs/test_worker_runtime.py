"""A scale-out worker builds its pipelines once, and again when a model is re-imported.

The node builds its pipelines per study, so a model imported under an existing name is the
one its next study runs; a Celery worker keeps them between jobs (building a network per job
would cost seconds), and without a check it would run the replaced model under the new
one's name until someone restarted it. The real :class:`WorkerRuntime` on a real SQLite
database, with the MONAI zoo's spleen bundle (its configs, CC BY 4.0, from the shared data)
as the user's imported model; nothing runs, only the pipelines are built.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from medvision.config import Settings
from medvision.db import Worker
from medvision.jobs._celery import WorkerRuntime

NAME = "spleen-ct"  # the name medvision's zoo spec gives spleen_ct_segmentation


def _replace(path: Path, text: str) -> None:
    """Write ``path`` anew, as an import does (a new file, renamed into place)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_model_reimported_under_its_name_is_built_again(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    configs = models / "spleen_ct_segmentation" / "configs"
    configs.mkdir(parents=True)
    zoo = shared_data / "monai-bundles" / "spleen_ct_segmentation" / "configs"
    for name in ("inference.json", "metadata.json"):
        shutil.copy(zoo / name, configs / name)
    monkeypatch.setenv("MEDVISION_MODELS_DIR", str(models))
    runtime = WorkerRuntime(Settings(data_dir=tmp_path / "data"))
    try:
        first = runtime.get_pipeline(NAME)
        assert first.version == "0.5.9"
        # Kept between jobs, imported model and built-in alike.
        assert runtime.get_pipeline(NAME) is first
        assert runtime.get_pipeline("lung-ct") is runtime.get_pipeline("lung-ct")

        metadata = json.loads((configs / "metadata.json").read_text())
        _replace(configs / "metadata.json", json.dumps({**metadata, "version": "0.6.0"}))
        second = runtime.get_pipeline(NAME)
        assert second is not first and second.version == "0.6.0"
        assert runtime.get_pipeline(NAME) is second
        # What GET /workers and `medvision status` show for this worker.
        with runtime.db.session() as session:
            row = session.scalars(select(Worker).where(Worker.name == runtime.name)).one()
            assert row.models[NAME] == "0.6.0"
    finally:
        runtime.close()
