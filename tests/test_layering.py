"""The package layout holds: who may import whom, read from the source as it is.

The imports are read with ``ast`` from every module, those inside functions included (a
late import is how the API and the web pages once hid a circle from Python), so a new
edge that closes a circle fails here and not at some later start-up.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import medvision

ROOT = Path(medvision.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def imports(path: Path) -> Iterator[str]:
    """Every absolute ``medvision...`` module or name that ``path`` imports, anywhere."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def package_of(module: str) -> str | None:
    """The top-level part of medvision that ``module`` belongs to (``api``, ``server``),
    or None for ``medvision`` itself and names imported from it (``__version__``)."""
    parts = module.split(".")
    if parts[0] != "medvision" or len(parts) < 2 or parts[1].startswith("__"):
        return None
    return parts[1]


def package_graph() -> dict[str, set[str]]:
    """Which top-level parts of medvision import which others."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        source = package_of(_module_name(path))
        if source is None:
            continue
        for name in imports(path):
            target = package_of(name)
            if target is not None and target != source:
                graph.setdefault(source, set()).add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per import circle found by a depth-first walk (empty: none)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"api": {"web"}, "web": {"api"}}) == [["api", "web", "api"]]
    assert cycles({"server": {"api", "web"}, "api": {"auth"}, "web": {"auth"}}) == []


def test_no_import_circle_between_medvision_packages() -> None:
    graph = package_graph()
    # The composition root mounts both routers; neither knows the other.
    assert {"api", "web"} <= graph["server"]
    assert "web" not in graph.get("api", set()) and "api" not in graph.get("web", set())
    assert cycles(graph) == []


def test_auth_has_no_web_framework() -> None:
    for path in (ROOT / "auth").rglob("*.py"):
        bad = [n for n in imports(path) if n.split(".")[0] in {"fastapi", "starlette"}]
        assert bad == [], f"{path.name} imports {bad}"
    code = "import sys, medvision.auth; print('fastapi' in sys.modules, 'starlette' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


#: What the node needs and the offline commands must not load: web, database, broker.
NODE_ONLY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "argon2",
    "celery",
    "kombu",
)


@pytest.mark.parametrize("command", [["run", "STUDY", "--out", "OUT"], ["pipelines"]])
def test_offline_commands_import_no_web_database_or_broker(
    command: list[str], shared_data: Path, tmp_path: Path
) -> None:
    """``medvision run`` and ``pipelines`` work on a laptop without a node: running them
    (the parser, the registry, the scan, the selection, the audit JSON lines) loads none of
    these. The study is a real head CT that lung-ct judges and refuses quickly."""
    study = shared_data / "ct" / "edge" / "philips-head-phantom-study"
    argv = [a.replace("STUDY", str(study)).replace("OUT", str(tmp_path / "out")) for a in command]
    code = (
        "import sys\n"
        "from medvision.cli import main\n"
        f"status = main({argv!r})\n"
        f"loaded = sorted(m for m in {NODE_ONLY!r} if m in sys.modules)\n"
        "print('LOADED', loaded, status)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("LOADED [] "), last


def test_packages_use_each_others_public_faces_only() -> None:
    """Across packages, every module imports through a package's ``__init__``, never the
    ``_private`` modules of another package (its own private modules are its to use)."""
    crossings = []
    for path in ROOT.rglob("*.py"):
        own = package_of(_module_name(path))
        for name in imports(path):
            parts = name.split(".")
            if package_of(name) not in (None, own) and len(parts) > 2 and parts[2][0] == "_":
                crossings.append(f"{path.relative_to(ROOT)} imports {name}")
    assert crossings == []
