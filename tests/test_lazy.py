"""Lazily served package names: imported on first use, then kept; unknown names fail as
Python's own attribute errors do (so ``hasattr`` and ``from x import y`` behave)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_a_lazy_name_imports_its_module_on_first_use_only() -> None:
    code = (
        "import sys\n"
        "import medvision.audit as audit\n"
        "before = 'medvision.audit._db' in sys.modules\n"
        "log_class = audit.DbAuditLog\n"
        "print(before, 'medvision.audit._db' in sys.modules, 'DbAuditLog' in vars(audit),\n"
        "      log_class.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True", "medvision.audit._db"]


def test_an_unknown_name_is_an_attribute_error() -> None:
    import medvision.auth

    assert not hasattr(medvision.auth, "no_such_name")
    with pytest.raises(ImportError):
        from medvision.auth import no_such_name  # noqa: F401
