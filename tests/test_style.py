"""The code is ``ruff`` clean, lint and format, as the contributing rules ask: checked here
so that CI fails on it rather than leaving it to each contributor's memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CODE = ["medvision", "tests", "bench", "scripts"]
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_ruff_is_clean(command: list[str]) -> None:
    # --no-cache: a test writes nothing into the working folder (.ruff_cache).
    done = subprocess.run(
        [str(RUFF), *command, "--no-cache", *CODE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
