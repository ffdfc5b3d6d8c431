"""An imported model is put in place whole: a node running meanwhile lists the old model or
the new one, never a part of either, and a failed import leaves the old one as it was.

Real imports of the repository's tiny nnU-Net fixture into a real folder; the node's own
discovery (:func:`find_nnunet_pipelines`, :func:`find_bundles`) is asked what it sees at a
moment inside the import, by wrapping the import's file copy. The one simulated fault is a
full disk (``ENOSPC`` from that copy), which cannot be made here without a small file system.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import yaml

from medvision.pipelines._model_folder import replacing
from medvision.pipelines.bundle import find_bundles, read_spec
from medvision.pipelines.nnunet import _import, find_nnunet_pipelines, import_nnunet
from tests.pipelines.nnunet.test_import import FIXTURE

NAME = "nnunet-tinyspheres"
CHECKPOINT = Path("nnunet/fold_0/checkpoint_final.pth")


def _seen(models: Path) -> tuple[str, int] | None:
    """What the node would run now: the listed model's orientation and checkpoint size."""
    listed = find_nnunet_pipelines([models]).get(NAME)
    if listed is None:
        return None
    folder, spec_path = listed
    assert read_spec(spec_path).name == NAME
    orientation = yaml.safe_load(spec_path.read_text())["nnunet"]["orientation"]
    return orientation, (folder / CHECKPOINT).stat().st_size


def _hidden(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.name.startswith("."))


def test_a_reimport_is_seen_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    import_nnunet(FIXTURE, models)
    size = (FIXTURE / "fold_0" / "checkpoint_final.pth").stat().st_size
    assert _seen(models) == ("RAS", size)
    during: list[tuple[str, int] | None] = []
    real_copy = shutil.copyfile

    def copy_and_look(src: Path, dst: Path) -> Path:
        done = real_copy(src, dst)
        during.append(_seen(models))
        return done

    monkeypatch.setattr(_import.shutil, "copyfile", copy_and_look)
    import_nnunet(FIXTURE, models, orientation="LPS")
    monkeypatch.undo()
    # After each file of the new import was written, the node still saw the old model whole.
    assert during and set(during) == {("RAS", size)}, during
    assert _seen(models) == ("LPS", size)
    assert _hidden(models) == []  # nothing left beside it


def test_a_failed_reimport_leaves_the_old_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    import_nnunet(FIXTURE, models)
    before = {p.relative_to(models): p.read_bytes() for p in models.rglob("*") if p.is_file()}
    real_copy = shutil.copyfile

    def disk_full_at_the_checkpoint(src: Path, dst: Path) -> Path:
        if Path(src).name == "checkpoint_final.pth":
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_copy(src, dst)

    monkeypatch.setattr(_import.shutil, "copyfile", disk_full_at_the_checkpoint)
    with pytest.raises(OSError, match="No space left"):
        import_nnunet(FIXTURE, models, orientation="LPS")
    after = {p.relative_to(models): p.read_bytes() for p in models.rglob("*") if p.is_file()}
    assert after == before
    assert _hidden(models) == []


def test_a_model_being_written_is_not_listed(tmp_path: Path, shared_data: Path) -> None:
    models = tmp_path / "models"
    zoo = shared_data / "monai-bundles" / "spleen_ct_segmentation" / "configs"
    with replacing(models / "spleen_ct_segmentation") as staging:
        (staging / "configs").mkdir()
        for name in ("inference.json", "metadata.json"):
            shutil.copy(zoo / name, staging / "configs" / name)
        shutil.copytree(import_nnunet(FIXTURE, tmp_path / "elsewhere"), models / ".x.importing")
        # Complete as they are, neither hidden folder is a model yet.
        assert find_bundles([models]) == {}
        assert find_nnunet_pipelines([models]) == {}
    assert list(find_bundles([models])) == ["spleen-ct"]
    assert (models / "spleen_ct_segmentation").stat().st_mode & 0o777 == 0o755


def test_the_old_model_is_swapped_out_in_one_step(tmp_path: Path) -> None:
    """On Linux the new folder and the old one trade places in one ``renameat2`` call, so
    the model's path exists at every moment of a re-import (no gap between two renames)."""
    from medvision.pipelines._model_folder import _exchange

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "weights").write_text("new")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_text("old")
    inode = (tmp_path / "new").stat().st_ino
    assert _exchange(tmp_path / "new", tmp_path / "model")
    assert (tmp_path / "model" / "weights").read_text() == "new"
    assert (tmp_path / "new" / "weights").read_text() == "old"
    assert (tmp_path / "model").stat().st_ino == inode
    with replacing(tmp_path / "model") as staging:
        (staging / "weights").write_text("newer")
    assert (tmp_path / "model" / "weights").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "new"]


def test_what_a_killed_import_left_is_removed_by_the_next(tmp_path: Path) -> None:
    """A day-old hidden folder of the same model is an import that was killed (kill -9, a
    reboot): the next import of that model removes it; a recent one may be running."""
    import os
    import time

    from medvision.pipelines._model_folder import ABANDONED_AFTER_S

    models = tmp_path / "models"
    left = models / ".nnunet-tinyspheres.importing-abc123"
    running = models / ".nnunet-tinyspheres.importing-def456"
    other = models / ".another-model.importing-xyz789"
    for folder in (left, running, other):
        (folder / "nnunet").mkdir(parents=True)
    day_ago = time.time() - ABANDONED_AFTER_S - 60
    for folder in (left, other):
        os.utime(folder, (day_ago, day_ago))
    import_nnunet(FIXTURE, models)
    assert _hidden(models) == sorted([running.name, other.name])
