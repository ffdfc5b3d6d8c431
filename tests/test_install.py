"""scripts/install.sh (the README's first command) and what CI adds to it.

Where torch comes from is tested through ``install.sh --dry-run``, which prints the pip
commands and changes nothing; pip's own ``--dry-run`` is what probes for a local wheel, so
the rule is checked against the real resolver with a wheel folder made here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT

INSTALL = REPO_ROOT / "scripts" / "install.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _dry_run(tmp_path: Path, find_links: Path, **env: str) -> list[str]:
    """install.sh --dry-run with pip's configuration replaced by ``find_links`` alone."""
    done = subprocess.run(
        ["bash", str(INSTALL), "--dry-run"],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "PYTHON": sys.executable,
            "MEDVISION_VENV": str(tmp_path / "venv"),  # not made: a dry run
            "PIP_CONFIG_FILE": os.devnull,  # the machine's pip.conf (e.g. /opt/wheels) off
            "PIP_FIND_LINKS": str(find_links),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "venv").exists()
    return done.stdout.splitlines()


def _torch_line(lines: list[str]) -> str:
    (line,) = [ln for ln in lines if "torch==" in ln]
    return line


def _vision_line(lines: list[str]) -> str:
    (line,) = [ln for ln in lines if "torchvision==" in ln]
    return line


def _fake_torch_wheel(folder: Path, name: str = "torch", version: str = "2.13.0") -> None:
    """A wheel that pip accepts as ``name`` ``version``+cpu (metadata only)."""
    folder.mkdir(exist_ok=True)
    info = f"{name}-{version}+cpu.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}+cpu-py3-none-any.whl", "w") as whl:
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}+cpu\n"
        whl.writestr(f"{info}/METADATA", metadata)
        wheel = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        whl.writestr(f"{info}/WHEEL", wheel)
        whl.writestr(f"{info}/RECORD", "")


def test_a_local_torch_wheel_is_used_as_pip_is_configured(tmp_path) -> None:
    wheels = tmp_path / "wheels"
    _fake_torch_wheel(wheels)
    lines = _dry_run(tmp_path, wheels)
    assert _torch_line(lines).endswith("pip install -q torch==2.13.0"), lines
    # torch first, then medvision with the test extras, editable.
    assert lines.index(_torch_line(lines)) < len(lines) - 1
    assert lines[-1].endswith("pip install -q -e .[test]"), lines


def test_without_a_local_wheel_linux_x86_64_takes_the_cpu_index(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _torch_line(_dry_run(tmp_path, empty, MEDVISION_PLATFORM="Linux x86_64"))
    assert line.endswith(f"torch==2.13.0 --index-url {CPU_INDEX}"), line


def test_elsewhere_pypi_torch_is_already_the_cpu_build(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _torch_line(_dry_run(tmp_path, empty, MEDVISION_PLATFORM="Darwin arm64"))
    assert line.endswith("pip install -q torch==2.13.0"), line


def test_torch_index_url_wins_for_a_gpu_machine(tmp_path) -> None:
    wheels = tmp_path / "wheels"
    _fake_torch_wheel(wheels)
    cuda = "https://download.pytorch.org/whl/cu128"
    line = _torch_line(_dry_run(tmp_path, wheels, TORCH_INDEX_URL=cuda))
    assert line.endswith(f"torch==2.13.0 --index-url {cuda}"), line


def test_nnunet_gets_torchvision_from_where_torch_comes_from(tmp_path) -> None:
    """[test] brings nnU-Net, whose timm needs torchvision: the build made for this torch,
    from torch's own source, after torch and before medvision, never re-resolving torch."""
    wheels = tmp_path / "wheels"
    _fake_torch_wheel(wheels)
    _fake_torch_wheel(wheels, "torchvision", "0.28.0")
    lines = _dry_run(tmp_path, wheels, MEDVISION_PLATFORM="Linux x86_64")
    vision = _vision_line(lines)
    assert vision.endswith("pip install -q --retries 1 --no-deps torchvision==0.28.0"), vision
    assert lines.index(_torch_line(lines)) < lines.index(vision) < len(lines) - 1

    # No local torchvision: PyPI's Linux one is a CUDA build, so PyTorch's CPU index.
    only_torch = tmp_path / "only-torch"
    _fake_torch_wheel(only_torch)
    lines = _dry_run(tmp_path, only_torch, MEDVISION_PLATFORM="Linux x86_64")
    assert _torch_line(lines).endswith("pip install -q torch==2.13.0"), lines
    assert _vision_line(lines).endswith(f"--no-deps torchvision==0.28.0 --index-url {CPU_INDEX}")

    cuda = "https://download.pytorch.org/whl/cu128"
    lines = _dry_run(tmp_path, wheels, TORCH_INDEX_URL=cuda)
    assert _vision_line(lines).endswith(f"torchvision==0.28.0 --index-url {cuda}"), lines

    lines = _dry_run(tmp_path, wheels, MEDVISION_EXTRAS="nnunet")
    assert lines[-1].endswith("pip install -q -e .[nnunet]") and _vision_line(lines)
    lines = _dry_run(tmp_path, wheels, MEDVISION_EXTRAS="postgres,scale")
    assert not [ln for ln in lines if "torchvision==" in ln], lines


def test_the_torchvision_pin_matches_install_sh() -> None:
    import tomllib

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (pin,) = [r.split("==")[1] for r in extras["nnunet"] if r.startswith("torchvision==")]
    assert f"TORCHVISION_VERSION={pin}\n" in INSTALL.read_text()


def test_the_torch_pin_is_the_one_in_pyproject() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    script = INSTALL.read_text()
    (pin,) = re.findall(r'"torch==([0-9.]+)"', pyproject)
    assert f"TORCH_VERSION={pin}\n" in script


def test_ci_adds_no_python_package_to_the_readme_commands() -> None:
    """.ci/run = Debian packages + services + the README's two commands: every Python
    package a test imports comes from install.sh, so a user's run matches CI's."""
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert not re.search(r"\bpip3? install\b|-m pip\b", ci)
    assert "bash scripts/install.sh && .venv/bin/medvision run dicom_samples/chest-ct" in ci
    assert "bash scripts/install.sh && .venv/bin/medvision run dicom_samples/chest-ct" in readme
    command = ".venv/bin/python -m pytest -q -n 2 --dist loadfile"
    assert ci.rstrip().endswith(command)
    assert f"\n{command}\n" in readme


def test_the_test_extra_holds_every_optional_part() -> None:
    """What the tests import from the optional parts comes with '.[test]'."""
    import tomllib

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {"postgres", "scale", "training", "nnunet", "test"} <= set(extras)
    (self_ref,) = [r for r in extras["test"] if r.startswith("medvision[")]
    parts = set(self_ref[len("medvision[") : -1].split(","))
    assert parts == {"postgres", "scale", "training", "nnunet"}
