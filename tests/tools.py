"""The independent command-line readers the tests check our DICOM with.

dciodvfy (dicom3tools) and dcmqi come from the test extras in the same environment as the
interpreter running the tests. A missing tool fails the test: a skipped conformance check
would hide exactly the defects it exists to find.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
_PERSON_NAME = re.compile(r"PN \[\d+\] = <[^>]*>")


def tool(name: str) -> str:
    """Path of a reader installed with the test extras (dciodvfy, segimage2itkimage, ...)."""
    path = VENV_BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) that dciodvfy reports; warnings are printed with names masked."""
    proc = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warns = [line for line in lines if line.startswith("Warning")]
    for line in warns:  # printed for triage, with person names masked (no PHI in logs)
        print(f"dciodvfy {Path(path).name}: {_PERSON_NAME.sub('PN = <masked>', line)}")
    return errors, warns


def dciodvfy_errors(path: Path) -> list[str]:
    return dciodvfy(path)[0]


__all__ = ["VENV_BIN", "dciodvfy", "dciodvfy_errors", "tool"]
