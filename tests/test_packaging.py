"""medvision installed like a package, not run from a checkout.

A copy of the repository's files (what git tracks, plus new files not ignored) is installed
with ``scripts/install.sh`` non-editable and with no extras into a fresh virtual environment
(no system site-packages), as ``pip install .`` would; then ``medvision run`` on the bundled
sample and ``medvision serve`` are started from an unrelated folder with no ``PYTHONPATH``.
That fails if the package reaches into the checkout (``sys.path`` edits, ``__file__`` paths
to ``../shared`` or ``models/``), if its data files are not declared, or if the offline path
imports an optional part (Celery, psycopg, nibabel are not installed here).

Slow by nature: pip installs torch (from the machine's local wheel where pip is configured
with one, as on the development machine, else from PyTorch's CPU index) and every
dependency, with the test session's own empty home and so an empty pip cache: the user's
``~/.cache/pip`` is neither read nor written. About 4-5 minutes on the shared, loaded 2-core
machine, mostly unpacking.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.node.peers import free_port

SAMPLE = REPO_ROOT / "dicom_samples" / "chest-ct"


def _copy_sources(dest: Path) -> None:
    """The files a fresh clone would have (and new ones not yet committed), links kept."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        src = REPO_ROOT / name
        if not src.is_symlink() and not src.exists():
            continue  # deleted in the working tree, not yet committed
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with medvision installed from a copy of the sources; returns its bin/."""
    root = tmp_path_factory.mktemp("packaging")
    src, venv = root / "src", root / "venv"
    _copy_sources(src)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        MEDVISION_VENV=str(venv),
        MEDVISION_EXTRAS="",
        MEDVISION_EDITABLE="0",
        PYTHON=sys.executable,
    )
    done = subprocess.run(
        ["bash", str(src / "scripts" / "install.sh")],
        env=env, cwd=root, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shutil.rmtree(src)  # nothing may still point into the sources
    return venv / "bin"


def _user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith("MEDVISION_")}  # fmt: skip
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    return env


def test_installed_package_is_the_venvs_own_copy(installed: Path) -> None:
    out = subprocess.run(
        [str(installed / "python"), "-c",
         "import importlib.util as u, medvision, sys; print(medvision.__file__); "
         "print([m for m in ('celery', 'psycopg', 'nibabel', 'pytest') if u.find_spec(m)]); "
         "from medvision.pipelines.bundle import bundled_models_dir as b; print(b()); "
         "print(sorted(p.name for p in b().iterdir()))"],
        env=_user_env(installed.parent), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    site = str(installed.parent / "lib")
    assert lines[0].startswith(site), lines  # not the checkout
    assert lines[1] == "[]", lines  # the core install has no optional part
    assert lines[2].startswith(site) and not Path(lines[2]).is_symlink(), lines
    assert "README.md" in lines[3], lines  # models/ shipped as package data


def test_run_on_the_sample_from_another_folder(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [str(installed / "medvision"), "run", str(SAMPLE), "--out", "results"],
        env=_user_env(tmp_path / "home"), cwd=elsewhere, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"Lesion 1\s+Left lung", done.stdout), done.stdout
    (folder,) = {p.parent for p in (elsewhere / "results").rglob("seg.dcm")}
    assert {p.name for p in folder.iterdir()} >= {"seg.dcm", "sr.dcm", "findings.json"}
    # The scale-out worker says which extra it needs instead of a bare ImportError.
    worker = subprocess.run(
        [str(installed / "medvision"), "worker"],
        env={**_user_env(tmp_path / "home"), "MEDVISION_BROKER_URL": "amqp://127.0.0.1:1//"},
        cwd=elsewhere, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert worker.returncode == 2, worker.stderr
    assert "pip install 'medvision[scale]'" in worker.stderr, worker.stderr


def test_serve_from_another_folder_answers_health(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    http = free_port()
    env = {
        **_user_env(tmp_path / "home"),
        "MEDVISION_DICOM_PORT": str(free_port()),
        "MEDVISION_HTTP_PORT": str(http),
        "MEDVISION_BIND_ADDRESS": "127.0.0.1",
    }
    log = elsewhere / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(installed / "medvision"), "serve"], env=env, cwd=elsewhere, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        from tests.node.peers import wait_for

        def health() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=5) as r:
                return r.status == 200

        wait_for("the installed node's /health", health, 300, 0.5)
        assert (elsewhere / "medvision-data" / "medvision.db").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def test_the_package_does_not_reach_into_the_checkout() -> None:
    """No ``sys.path`` edits and no ``__file__`` paths climbing out of the package (to
    ``../shared``, ``models/`` or ``dicom_samples``): package data and settings only."""
    for path in sorted((REPO_ROOT / "medvision").rglob("*.py")):
        text = path.read_text()
        assert "sys.path" not in text, path
        assert not re.search(r"__file__\)(\.resolve\(\))?\.parents\[", text), path
        assert "import dicom_samples" not in text and "from dicom_samples" not in text, path
