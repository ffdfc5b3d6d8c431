"""The test run is hermetic (tests/conftest.py): what a user keeps in their home, working
folder or shell settings does not reach a test.

The proof runs pytest in a child process as a user with an imported model in
``~/.cache/medvision/models``, ``MEDVISION_MODELS_DIR`` / ``MEDVISION_DATA_DIR`` set and a
``medvision-data`` folder in the working directory, on the probe test below; the same
environment without pytest's fixtures is shown to expose the model first, so the check
cannot pass for want of a leak to stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

SPLEEN_ZOO = REPO_ROOT / "medvision" / "pipelines" / "bundle" / "zoo"
LEAKED = "spleen-ct"  # the pipeline name of the zoo spleen bundle placed in the user folder


def _user(tmp_path: Path, shared_data: Path) -> tuple[dict[str, str], Path]:
    """A user's environment: an imported bundle, settings, a node data folder in the cwd."""
    home = tmp_path / "user-home"
    bundle = home / ".cache" / "medvision" / "models" / "spleen_ct_segmentation"
    (bundle / "configs").mkdir(parents=True)
    zoo = shared_data / "monai-bundles" / "spleen_ct_segmentation" / "configs"
    for name in ("inference.json", "metadata.json"):
        shutil.copy(zoo / name, bundle / "configs" / name)
    cwd = tmp_path / "user-cwd"
    (cwd / "medvision-data").mkdir(parents=True)
    (cwd / "medvision-data" / "marker").write_text("the user's node data\n")
    env = {
        **{k: v for k, v in os.environ.items() if k != "MEDVISION_OHIF_CACHE"},
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "MEDVISION_MODELS_DIR": str(bundle.parent),
        "MEDVISION_DATA_DIR": str(cwd / "medvision-data"),
        "MEDVISION_PIPELINES": f'["{LEAKED}"]',
        "MEDVISION_TRAIN_DEVICE": "cuda",
        # A variable of the test run itself (like MEDVISION_CHROMIUM): kept.
        "MEDVISION_OHIF_SHOTS": str(tmp_path / "shots"),
        "PROBE_EXPECTS_SHOTS": str(tmp_path / "shots"),
        "PROBE_USER_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    return env, cwd


def test_a_users_model_and_settings_do_not_reach_the_tests(tmp_path, shared_data) -> None:
    env, cwd = _user(tmp_path, shared_data)
    # Without the fixtures the user's model is a pipeline, and the settings apply ...
    plain = subprocess.run(
        [sys.executable, "-c",
         "from medvision import pipelines; from medvision.config import load_settings; "
         "print(pipelines.available(), load_settings().pipelines)"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.count(LEAKED) == 2, plain.stdout
    # ... and under pytest, with tests/conftest.py, the probe sees none of it.
    probe = f"{Path(__file__).resolve()}::test_probe_sees_a_clean_environment"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(REPO_ROOT), probe],
        env=env, cwd=cwd, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout, done.stdout[-3000:]
    # Nothing was written into the user's folders.
    assert sorted(p.name for p in cwd.iterdir()) == ["medvision-data"]
    assert [p.name for p in (cwd / "medvision-data").iterdir()] == ["marker"]


def test_probe_sees_a_clean_environment(tmp_path) -> None:
    """Run on its own by the test above (and harmlessly in the suite): the user's model,
    settings and working folder are out of reach."""
    from medvision import pipelines
    from medvision.config import load_settings
    from medvision.pipelines.bundle import user_models_dir

    assert LEAKED not in pipelines.available()
    settings = load_settings()
    assert settings.pipelines == [] and settings.data_dir == Path("medvision-data")
    assert not Path("medvision-data").exists()  # the cwd is an empty folder of this test's
    assert list(Path.cwd().iterdir()) == []
    home = Path.home()
    assert user_models_dir().is_relative_to(home) and not user_models_dir().exists()
    assert "user-home" not in str(home) and home.is_dir()
    # Nothing of medvision's in this test's own home; other libraries may keep their caches
    # there (matplotlib, which nnU-Net brings, writes its font cache when MONAI imports it).
    written = [p.relative_to(home) for p in home.rglob("*") if p.is_file()]
    assert all(p.parts[:2] in {(".cache", "matplotlib"), (".config", "matplotlib")}
               for p in written), written  # fmt: skip
    assert not any(k in os.environ for k in ("MEDVISION_MODELS_DIR", "MEDVISION_DATA_DIR"))
    assert not any(k.startswith("MEDVISION_TRAIN_") for k in os.environ)
    # A variable of the test run itself is kept (the test above says what to expect).
    assert os.environ.get("MEDVISION_OHIF_SHOTS") == os.environ.get("PROBE_EXPECTS_SHOTS")
    # The OHIF download cache, kept across runs, lies in neither home (run as the test
    # above, without MEDVISION_OHIF_CACHE, it is the default one).
    from tests.conftest import OHIF_CACHE
    from tests.viewer.ohif import ohif_cache_dir

    assert ohif_cache_dir() == OHIF_CACHE and not OHIF_CACHE.is_relative_to(home)
    user_home = os.environ.get("PROBE_USER_HOME")
    assert user_home is None or not OHIF_CACHE.is_relative_to(user_home), OHIF_CACHE
