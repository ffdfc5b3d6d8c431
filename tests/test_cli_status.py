"""``medvision status`` on a database shared by several receivers (docs/scaling.md): each
receiver's row, as its own :class:`ReceiverRow` beats it, is one line of ``receivers:``.
On SQLite, and on PostgreSQL when ``MEDVISION_TEST_POSTGRES_URL`` is set."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from medvision.cli import main
from medvision.db import Database, Receiver, utcnow
from medvision.node._receivers import ReceiverRow
from tests.jobs import conftest as jobs_conftest

#: The SQLite / PostgreSQL database of tests/jobs.
db = jobs_conftest.db

STALE_S = 30
#: Runs ``medvision status`` on the test's database; what it printed, line by line.
Status = Callable[[], list[str]]


@pytest.fixture
def status(
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Status:
    for key in list(os.environ):
        if key.startswith("MEDVISION_") and key != "MEDVISION_SHARED_DATA":
            monkeypatch.delenv(key)
    config = tmp_path / "node.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\ndatabase_url = "{db.url}"\nworker_stale_s = {STALE_S}\n'
    )

    def run() -> list[str]:
        capsys.readouterr()
        assert main(["status", "--config", str(config)]) == 0
        return capsys.readouterr().out.splitlines()

    return run


def _receivers(lines: list[str]) -> dict[str, str]:
    """The ``receivers:`` section's lines by receiver name."""
    assert lines[0] == "receivers:", lines
    section = [line for line in lines[1:] if line.startswith("    ")]
    return {line.split()[0]: line for line in section}


def test_status_shows_each_receiver_serving_stopped_or_dead(status: Status, db: Database) -> None:
    a, b = ReceiverRow(db, "rx-a"), ReceiverRow(db, "rx-b")
    a.beat({"1.2.3"})  # one study acknowledged on rx-a, not yet indexed
    b.beat(set())
    lines = status()
    shown = _receivers(lines)
    assert sorted(shown) == ["rx-a", "rx-b"]
    assert shown["rx-a"].split()[1] == "serving"
    assert f"{socket.gethostname()} pid {os.getpid()};" in shown["rx-a"]
    assert "1 study on their way into the index" in shown["rx-a"]
    assert "0 studies on their way into the index" in shown["rx-b"]
    assert "1.2.3" not in "\n".join(lines)
    assert lines[-1] == "no studies received yet"

    b.beat((), state="stopped")
    shown = _receivers(status())
    assert [shown[n].split()[1] for n in ("rx-a", "rx-b")] == ["serving", "stopped"]

    # rx-a stops reporting (killed, or its host lost): dead once worker_stale_s is over.
    with db.session() as session:
        session.execute(
            update(Receiver)
            .where(Receiver.name.in_(["rx-a", "rx-b"]))
            .values(heartbeat_at=utcnow() - timedelta(seconds=STALE_S + 1))
        )
    shown = _receivers(status())
    assert [shown[n].split()[1] for n in ("rx-a", "rx-b")] == ["dead", "stopped"]
    assert "1 study on their way into the index" in shown["rx-a"]  # in its journal


def test_status_without_named_receivers_has_no_receivers_section(status: Status) -> None:
    assert status() == ["no studies received yet"]
