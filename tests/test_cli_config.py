"""Every command that works on the node's data takes ``--config`` and uses that file's node.

Each command runs against a config file in tmp_path, from a working folder and home that
must stay empty (the default data folder is ``./medvision-data``), with no ``MEDVISION_*``
variable set: whatever the command writes has to land in the config's ``data_dir``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from medvision.cli import _parser, main
from tests.audit.test_syslog import Collector
from tests.conftest import REPO_ROOT
from tests.node.peers import free_port, http_json, wait_for

#: Commands that read or write the node's data (database, spool, results, audit trail).
NODE_COMMANDS = [
    ("serve",),
    ("worker",),
    ("status",),
    ("db", "upgrade"),
    ("db", "current"),
    ("users", "add", "x", "--role", "qa"),
    ("users", "list"),
    ("users", "token", "x"),
    ("users", "disable", "x"),
    ("audit", "verify"),
    ("audit", "export", "--out", "x.xml"),
    ("audit", "send-syslog", "--host", "127.0.0.1"),
    ("export", "--out", "x"),
]
#: Commands that never touch a node: offline analysis, the model folders, training.
OFFLINE_COMMANDS = {"run", "pipelines", "models", "train", "evaluate"}


@pytest.fixture
def node_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config naming tmp_path/data; cwd and HOME are empty folders checked afterwards."""
    for key in list(os.environ):
        if key.startswith("MEDVISION_") and key != "MEDVISION_SHARED_DATA":
            monkeypatch.delenv(key)
    for name in ("cwd", "home"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "node.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nbind_address = "127.0.0.1"\n'
        f"dicom_port = {free_port()}\nhttp_port = {free_port()}\n"
    )
    yield config
    assert not any((tmp_path / "cwd").iterdir()), "a command wrote into the working folder"
    assert not any((tmp_path / "home").iterdir()), "a command wrote into the home folder"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_either_a_node_command_or_offline() -> None:
    """A new command has to be put on one list: a node command is then tested below."""
    assert set(_subcommands(_parser())) == {c[0] for c in NODE_COMMANDS} | OFFLINE_COMMANDS


@pytest.mark.parametrize("command", NODE_COMMANDS, ids=" ".join)
def test_every_node_command_reads_its_config_file(
    command: tuple[str, ...], node_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--config`` after the (sub)command is accepted and read: a missing file is named
    in one line with exit 2 (argparse would say "unrecognized arguments")."""
    missing = node_config.with_name("nowhere.toml")
    assert main([*command, "--config", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: config file {missing} does not exist"


def test_a_wrong_setting_is_one_line_not_a_traceback(
    node_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_config.write_text('dicom_port = "eleven"\n')
    assert main(["status", "--config", str(node_config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid settings (config file {node_config}")
    assert "dicom_port" in err and "Traceback" not in err and err.count("\n") == 1


def test_users_status_db_and_audit_work_on_the_config_node(
    node_config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = ["--config", str(node_config)]
    data = tmp_path / "data"
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret\n"))
    assert main(["users", "add", "ann", "--role", "qa", "--password-stdin", *cfg]) == 0
    assert (data / "medvision.db").is_file()
    assert main(["users", "token", "ann", *cfg]) == 0
    assert main(["users", "disable", "ann", *cfg]) == 0
    capsys.readouterr()
    # Before the action, as before, still works.
    assert main(["users", *cfg, "list", "--json"]) == 0
    (ann,) = json.loads(capsys.readouterr().out)
    assert (ann["name"], ann["disabled"], ann["tokens"]) == ("ann", True, 0)  # revoked
    assert main(["users", "list", *cfg]) == 0
    assert capsys.readouterr().out.split()[:3] == ["ann", "qa", "disabled"]

    assert main(["status", *cfg]) == 0
    assert capsys.readouterr().out == "no studies received yet\n"
    assert main(["status", "--json", *cfg]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["db", "upgrade", *cfg]) == 0
    assert capsys.readouterr().out.startswith("at ")
    assert main(["db", "current", *cfg]) == 0
    assert "(head: " in capsys.readouterr().out

    assert main(["audit", "verify", *cfg]) == 0
    verified = capsys.readouterr().out
    assert str(data / "medvision.db") in verified and "chain intact" in verified
    assert main(["audit", "export", *cfg, "--out", str(tmp_path / "audit.xml")]) == 0
    assert "DICOM audit messages written" in capsys.readouterr().out
    collector = Collector()
    try:
        args = ["audit", "send-syslog", *cfg, "--host", "127.0.0.1", "--port", str(collector.port)]
        assert main(args) == 0
        assert "forwarded" in capsys.readouterr().out
    finally:
        collector.close()
    # The forwarder's watermark goes into the config's data folder by default.
    assert (data / f"audit-syslog.127.0.0.1-{collector.port}.json").is_file()


def test_worker_reads_its_config_file(node_config: Path, capsys: pytest.CaptureFixture) -> None:
    """Without broker_url in the file (nor the environment) the worker says so."""
    assert main(["worker", "--config", str(node_config)]) == 2
    assert "needs broker_url" in capsys.readouterr().err


def test_serve_prints_one_start_up_line(node_config: Path, tmp_path: Path) -> None:
    """The node's own line, not Alembic's plugin and migration-context INFO lines; it stops
    with exit 0 and leaves its data in the config's data_dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVISION_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "medvision", "serve", "--config", str(node_config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path / "cwd",
    )
    try:
        assert proc.stdout is not None
        # At a node's very first start it also warns, once, that it made the audit
        # checkpoint key (docs/audit.md: back it up); nothing else comes before the line.
        first = proc.stdout.readline()
        before = []
        while first and not first.startswith("medvision node "):
            before.append(first)
            first = proc.stdout.readline()
        port = tomllib.loads(node_config.read_text())["http_port"]
        # SIGTERM once uvicorn serves (its handler is installed by then).
        wait_for("/health", lambda: http_json(f"http://127.0.0.1:{port}/health"), 60)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first.startswith("medvision node MEDVISION listening on DICOM port "), first
    # Plain HTTP stays on the host unless the operator says otherwise, and the line says so.
    assert f"HTTP on 127.0.0.1:{port} (local only)" in first, first
    assert len(before) <= 1 and all("created the audit checkpoint key" in b for b in before), before
    assert first.rstrip().endswith(f"data in {tmp_path / 'data'}")
    assert rest == "", rest
    assert (tmp_path / "data" / "medvision.db").is_file()


def test_alembic_errors_still_show_when_its_info_lines_do_not() -> None:
    code = (
        "import logging; from medvision.cli._common import configure_logging; configure_logging(); "
        "log = logging.getLogger('alembic.runtime.migration'); "
        "log.info('Context impl SQLiteImpl.'); log.error('migration 0004 failed'); "
        "logging.getLogger('medvision.node').info('node line')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert "Context impl" not in result.stderr
    assert "alembic.runtime.migration ERROR migration 0004 failed" in result.stderr
    assert "medvision.node INFO node line" in result.stderr
