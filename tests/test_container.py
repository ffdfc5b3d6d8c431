"""The Dockerfile builds the node with the project's own install steps.

No container engine can pull a base image on the test machines (no registry is reachable),
so the image is not built here; what would break a build or drift from the tested install
is checked instead: every ``COPY`` source exists and passes ``.dockerignore``, the only
install step is ``scripts/install.sh`` (whose plan, printed by its ``--dry-run`` with the
image's settings, is a non-editable install with the node's extras and torch's CUDA index),
and the image runs ``serve`` as a non-root user with a health check and a data volume, on
the Python CI uses. docs/install.md says how the image was built and run by hand.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib

from tests.conftest import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args() -> dict[str, str]:
    return dict(
        rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest
    )


def _ignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pattern in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").replace("**/", "")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or fnmatch.fnmatch(
            parts[-1], pattern
        ):
            ignored = not negate
    return ignored


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    copies = [rest.split()[:-1] for word, rest in _instructions() if word == "COPY"]
    assert copies
    for sources in copies:
        for src in sources:
            assert (REPO_ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert not _ignored(src), f"COPY {src}: excluded by .dockerignore"
    # What pip install reads is all there: the package, its data, the shipped models.
    copied = {src for sources in copies for src in sources}
    assert {"pyproject.toml", "README.md", "medvision", "models"} <= copied
    assert _ignored(".venv/bin/python") and _ignored("tests/conftest.py")


def test_the_only_install_step_is_scripts_install_sh() -> None:
    runs = [rest for word, rest in _instructions() if word == "RUN"]
    installs = [r for r in runs if "install.sh" in r]
    assert len(installs) == 1 and "bash scripts/install.sh" in installs[0]
    assert not any(re.search(r"\bpip3? install\b|-m pip\b", r) for r in runs), runs


def test_install_plan_with_the_images_settings(tmp_path) -> None:
    """The RUN line's environment through install.sh --dry-run: torch from the CUDA index
    (its wheel carries the CUDA libraries), then medvision non-editable with the extras."""
    (run,) = [rest for word, rest in _instructions() if word == "RUN" and "install.sh" in rest]
    args = _args()
    env = dict(os.environ, PYTHON=sys.executable)
    for word in shlex.split(run.split("bash scripts/install.sh")[0]):
        name, _, value = word.partition("=")
        env[name] = re.sub(r"\$(\w+)", lambda m: args.get(m.group(1), ""), value)
    env["MEDVISION_VENV"] = str(tmp_path / "venv")  # /opt/medvision in the image
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "install.sh"), "--dry-run"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2].endswith(f"torch==2.13.0 --index-url {args['TORCH_INDEX_URL']}"), lines
    assert "/cu" in args["TORCH_INDEX_URL"]  # a CUDA build of torch for the GPU image
    assert lines[-1].endswith("pip install -q .[postgres,scale]"), lines  # not -e
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {"postgres", "scale"} <= set(extras)


def test_one_cuda_copy_and_the_python_of_ci() -> None:
    """The base has no CUDA of its own (the torch wheel brings it) and is Python 3.11, the
    version CI runs (Debian 12's python3) and pyproject's ruff target."""
    base = _args()["BASE"]
    assert base.startswith("python:3.11-"), base
    assert "cuda" not in base.lower() and "nvidia" not in DOCKERFILE.split("FROM")[1].lower()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["ruff"]["target-version"] == "py311"


def test_serve_as_non_root_with_health_check_and_data_volume() -> None:
    inst = _instructions()
    last = {word: rest for word, rest in inst}
    assert last["ENTRYPOINT"] == '["medvision"]' and last["CMD"] == '["serve"]'
    assert last["USER"] not in ("root", "0")
    assert "/health" in last["HEALTHCHECK"] and last["HEALTHCHECK"].startswith("--interval")
    assert last["VOLUME"] == '["/data"]'
    env = " ".join(rest for word, rest in inst if word == "ENV")
    assert "MEDVISION_DATA_DIR=/data" in env
    assert set(re.findall(r"\d+", last["EXPOSE"])) == {"11112", "8080"}
