"""Real DICOM peers for the node's tests: Orthanc, dcmtk tools and ``medvision serve``.

Everything runs on free loopback ports chosen at run time and is stopped by PID. Waiting is
done by polling with a deadline, never by fixed sleeps, so that the tests are as fast as the
machine allows and fail with a clear message when something never happens.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DCMTK = Path("/usr/bin")
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
ORTHANC_PLUGINS = Path("/usr/share/orthanc/plugins")
REPO_ROOT = Path(__file__).resolve().parents[2]


#: Ports :func:`free_port` chose below the kernel's ephemeral range start here.
LOWEST_PORT = 10000
#: Ports this process has handed out: never handed out twice.
_HANDED_OUT: set[int] = set()


#: Where Linux says which local ports outgoing connections take.
PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    """Where the kernel's range for outgoing connections' local ports starts (Linux: 32768)."""
    try:
        return int(PORT_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nobody listens on now, chosen outside the kernel's ephemeral range.

    A port from ``bind(0)`` is one of the ephemeral range, which the kernel also gives to the
    next outgoing connection (a test's HTTP client, Chromium, pip): by the time the peer that
    was told the port binds it, a connection may hold it, and the peer exits "port already in
    use" (Orthanc did, once, in a full run). Below that range no outgoing connection takes a
    port; one chosen at random there, bindable now and not handed out before by this process,
    is free unless another process picks the same one in the meantime.
    """
    low = _ephemeral_start()
    rng = random.SystemRandom()
    for _ in range(200) if low > LOWEST_PORT + 1000 else ():
        port = rng.randrange(LOWEST_PORT, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))  # taken on any address: not free
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no range below: as before
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PeerExited(RuntimeError):
    """The process a test waits for has exited: waiting longer cannot help."""


def log_tail(path: Path, lines: int = 30) -> str:
    """The end of a peer's log, for a failure message (the log may be in a temporary folder
    that is gone by the time anyone reads the failure)."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join(["", f"--- last {len(tail)} lines of {path}:", *tail])


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline,
    or at once when the probe says the peer has exited (:class:`PeerExited`)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (AssertionError, PeerExited):
            raise  # a test's own check failed, or the peer is gone: no point in waiting on
        except Exception as err:  # the peer may still be starting
            last_error = err
        if time.monotonic() > deadline:
            extra = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def http_json(
    url: str,
    data: Any = None,
    method: str | None = None,
    raw: bytes | None = None,
    token: str | None = None,
) -> Any:
    """GET (or POST ``data`` as JSON / ``raw`` bytes) and decode the JSON answer.

    ``token``: a medvision API token, sent as ``Authorization: Bearer``.
    """
    body = raw if raw is not None else (json.dumps(data).encode() if data is not None else None)
    req = urllib.request.Request(url, data=body, method=method)
    if raw is not None:
        req.add_header("Content-Type", "application/dicom")
    elif data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=120) as resp:
        text = resp.read()
    return json.loads(text) if text else None


def dcmtk(tool: str, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a dcmtk tool by absolute path (the venv's pynetdicom scripts shadow the names)."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(
        [str(DCMTK / tool), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal one process we started, by its PID, and wait until it is gone."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _entry(aet: str, port: int, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One of Orthanc's DicomModalities, on loopback."""
    return {"AET": aet, "Host": "127.0.0.1", "Port": port, **(extra or {})}


class Orthanc:
    """An Orthanc PACS in its own folder, with ``medvision`` as a known modality.

    ``modalities``: name -> (AE title, port) or (AE title, port, extra keys of the entry,
    e.g. ``{"UseDicomTls": True}``); ``config``: top-level keys added to or overriding
    Orthanc's configuration (``DicomTlsEnabled`` ...)."""

    def __init__(
        self,
        workdir: Path,
        modalities: Mapping[str, tuple[str, int] | tuple[str, int, Mapping[str, Any]]],
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.aet = "ORTHANC"
        self.log_path = self.dir / "orthanc.log"
        self.url = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "TEST-PACS",
            "StorageDirectory": str(self.dir / "db"),
            "IndexDirectory": str(self.dir / "db"),
            "Plugins": [
                str(ORTHANC_PLUGINS / "libOrthancDicomWeb.so"),
                str(ORTHANC_PLUGINS / "libOrthancGdcm.so"),
            ],
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            "UnknownSopClassAccepted": True,
            "DicomModalities": {name: _entry(*peer) for name, peer in modalities.items()},
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **(config or {}),
        }
        (self.dir / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.proc: subprocess.Popen | None = None

    def start(self) -> Orthanc:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [ORTHANC, str(self.dir / "orthanc.json")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        wait_for("Orthanc's REST API", lambda: self._alive() and self.get("/system"), 60)
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise PeerExited(f"Orthanc exited with {self.proc.returncode}{log_tail(self.log_path)}")
        return True

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
            self.log.close()

    def get(self, path: str) -> Any:
        return http_json(self.url + path)

    def get_bytes(self, path: str) -> bytes:
        """A raw GET, e.g. ``/instances/{id}/file``: the DICOM file as Orthanc stores it."""
        with urllib.request.urlopen(self.url + path, timeout=120) as resp:
            return resp.read()

    def post(self, path: str, data: Any) -> Any:
        return http_json(self.url + path, data, method="POST")

    def upload(self, files: Iterable[Path]) -> str:
        """POST each file to /instances; returns Orthanc's study id."""
        study = ""
        for path in files:
            answer = http_json(self.url + "/instances", raw=path.read_bytes(), method="POST")
            study = answer["ParentStudy"]
        return study

    def push(self, modality: str, resource: str) -> Any:
        """Make Orthanc C-STORE a resource to one of its modalities (synchronously)."""
        return self.post(
            f"/modalities/{modality}/store", {"Resources": [resource], "Synchronous": True}
        )

    def study_id(self, study_instance_uid: str) -> str | None:
        found = http_json(
            self.url + "/tools/lookup", raw=study_instance_uid.encode(), method="POST"
        )
        return next((f["ID"] for f in found if f["Type"] == "Study"), None)

    def instances_by_modality(self, study_instance_uid: str) -> dict[str, list[dict[str, Any]]]:
        """Instance tags of every series of the study, grouped by the series' Modality."""
        sid = self.study_id(study_instance_uid)
        out: dict[str, list[dict[str, Any]]] = {}
        if sid is None:
            return out
        for series in self.get(f"/studies/{sid}/series"):
            modality = series["MainDicomTags"].get("Modality", "")
            out.setdefault(modality, []).extend(self.get(f"/series/{series['ID']}/instances"))
        return out


class NodeProcess:
    """``medvision serve`` as a child process, configured only by environment variables."""

    def __init__(self, data_dir: Path, code: Path | None = None, **settings: Any) -> None:
        """``code``: a folder holding another version's ``medvision`` package, which the
        child imports before the venv's (a benchmark's baseline commit)."""
        self.data_dir = data_dir
        self.code = code
        self.dicom_port = settings.pop("dicom_port", None) or free_port()
        self.http_port = settings.pop("http_port", None) or free_port()
        self.ae_title = settings.get("ae_title", "MEDVISION")
        #: stdout and stderr of every start, beside the data folder
        self.log_path = data_dir.parent / f"node-{self.dicom_port}.log"
        self.settings = {
            "data_dir": str(data_dir),
            "dicom_port": self.dicom_port,
            "http_port": self.http_port,
            "bind_address": "127.0.0.1",
            # Most tests push with whatever AE title and configure no peers: said explicitly,
            # since a node accepts no unknown calling AE by default.
            "accept_unknown_calling_ae": True,
            **settings,
        }
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.http_port}"
        #: API token of a user with every role, made at the first start.
        self.token: str | None = None

    def _ensure_user(self) -> None:
        """The API wants credentials: create a user with every role and keep a token."""
        if self.token is not None:
            return
        from medvision.auth import Role, add_user, new_token
        from medvision.config import Settings
        from medvision.db import Database

        db = Database(Settings(**self.settings).db_url)
        try:
            db.create_schema()
            add_user(db, "test-node", [r.value for r in Role])
            self.token = new_token(db, "test-node")
        finally:
            db.dispose()

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVISION_")}
        if "MEDVISION_SHARED_DATA" in os.environ:
            env["MEDVISION_SHARED_DATA"] = os.environ["MEDVISION_SHARED_DATA"]
        for key, value in self.settings.items():
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"MEDVISION_{key.upper()}"] = text
        env["PYTHONUNBUFFERED"] = "1"
        if self.code is not None:
            env["PYTHONPATH"] = str(self.code)
        return env

    def start(self, timeout: float = 90) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_user()
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medvision.cli", "serve"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.data_dir.parent,
        )
        wait_for("the node's /health", lambda: self._alive() and self.get("/health"), timeout)
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            raise PeerExited(f"medvision serve exited with {code}{log_tail(self.log_path)}")
        return True

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a power cut of the process."""
        assert self.proc is not None
        stop_process(self.proc, signal.SIGKILL)
        self.proc = None
        self.log.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
            self.log.close()

    def get(self, path: str) -> Any:
        return http_json(self.url + path, token=self.token)

    def study(self, uid: str) -> dict[str, Any] | None:
        try:
            return self.get(f"/studies/{uid}")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise

    def status(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "medvision.cli", "status", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.data_dir.parent,
            timeout=60,
        )


def node_with_orthanc(
    tmp: Path, node: NodeProcess | None = None, **settings: Any
) -> tuple[Orthanc, NodeProcess]:
    """A node that accepts pushes from an Orthanc (allow-listed by AE title) and sends its
    results back to it (modality ``pacs``), and that Orthanc, which knows the node as
    ``medvision``. Neither is started; ``settings`` add to or override the node's. ``node``:
    one made by the caller (e.g. with a models folder), else a plain ``NodeProcess`` in
    ``tmp / "medvision-data"``."""
    node = node or NodeProcess(tmp / "medvision-data")
    orthanc = Orthanc(tmp / "orthanc", {"medvision": (node.ae_title, node.dicom_port)})
    node.settings.update(
        quiet_period_s=3,
        poll_interval_s=0.2,
        allowed_calling_aets=[orthanc.aet],
        accept_unknown_calling_ae=False,
        modalities={
            "pacs": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
        },
        **settings,
    )
    return orthanc, node


__all__ = [
    "NodeProcess",
    "Orthanc",
    "PeerExited",
    "dcmtk",
    "free_port",
    "http_json",
    "log_tail",
    "node_with_orthanc",
    "stop_process",
    "wait_for",
]
