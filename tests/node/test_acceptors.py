"""Several DICOM acceptor processes behind one port (``scp_processes``; docs/node.md).

The node's :class:`~medvision.node._acceptors.AcceptorPool` runs here as ``medvision serve``
runs it: real processes on a real database and spool, with dcmtk's storescu and pynetdicom
as the peers. The study assembler is called the way the node's assembler thread calls it
(under the pool's assembly lock, with the processes' busy studies), so no worker pool runs
the job it queues. The last test starts ``medvision serve`` itself for what an operator sees.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE
from sqlalchemy import func, select

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Acceptor, Base, Database, Instance, Job, Study
from medvision.node._acceptors import AcceptorPool
from medvision.node._assembler import complete_quiet_studies
from tests.node.certs import make_certs
from tests.node.peers import NodeProcess, dcmtk, free_port, wait_for

POSTGRES_URL = os.environ.get("MEDVISION_TEST_POSTGRES_URL", "")
CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


@dataclass
class RunningPool:
    settings: Settings
    db: Database
    audit: DbAuditLog
    pool: AcceptorPool

    @property
    def port(self) -> int:
        return self.settings.dicom_port

    def assemble(self) -> list[str]:
        """One pass of the node's study assembler."""
        with self.pool.assembly_lock:
            return complete_quiet_studies(self.settings, self.db, self.audit, busy=self.pool.busy())

    def acceptors(self) -> dict[int, Acceptor]:
        with self.db.session() as session:
            return {a.slot: a for a in session.scalars(select(Acceptor))}

    def indexed(self) -> set[str]:
        with self.db.session() as session:
            return set(session.scalars(select(Instance.sop_instance_uid)))


@pytest.fixture
def start_pool(tmp_path: Path) -> Iterator[Callable[..., RunningPool]]:
    """Start an AcceptorPool of ``processes`` on a fresh data folder (SQLite unless
    ``database_url`` is given)."""
    running: list[RunningPool] = []

    def start(processes: int, **overrides: Any) -> RunningPool:
        overrides.setdefault("accept_unknown_calling_ae", True)
        if overrides.get("database_url"):  # a clean schema for each test
            engine = Database(overrides["database_url"]).engine
            Base.metadata.drop_all(engine)
            engine.dispose()
        settings = Settings(
            data_dir=tmp_path / f"data{len(running)}",
            dicom_port=free_port(),
            bind_address="127.0.0.1",
            scp_processes=processes,
            quiet_period_s=1,
            pipelines=["lung-ct"],
            **overrides,
        )
        settings.data_dir.mkdir(parents=True)
        db = Database(settings.db_url)
        db.create_schema()
        pool = AcceptorPool(settings, db, processes)
        pool.recover()  # as Node.start does
        pool.start()
        running.append(RunningPool(settings, db, DbAuditLog(db), pool))
        return running[-1]

    yield start
    for r in running:
        r.pool.stop()
        r.db.dispose()


def _storescu(port: int, files: list[Path]) -> Any:
    return dcmtk("storescu", "-aet", "PACS", "-aec", "MEDVISION", "127.0.0.1", port, *files)


def _queued(p: RunningPool, uid: str) -> bool:
    p.assemble()
    with p.db.session() as session:
        return session.scalar(select(Study.state).where(Study.study_instance_uid == uid)) in (
            "queued",
            "failed",
        )


def _one_study_one_job(p: RunningPool, files: list[Path]) -> None:
    """What a user checks: one study with every instance, and one job for it."""
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    wait_for("the study to be assembled", lambda: _queued(p, uid), 60, 0.2)
    with p.db.session() as session:
        studies = list(session.scalars(select(Study)))
        jobs = list(session.scalars(select(Job)))
        instances = session.scalar(select(func.count()).select_from(Instance))
    assert [(s.study_instance_uid, s.state, s.instance_count) for s in studies] == [
        (uid, "queued", len(files))
    ]
    assert instances == len(files)
    assert [(j.study_instance_uid, j.pipeline, j.state) for j in jobs] == [
        (uid, "lung-ct", "queued")
    ]
    # Assembled once: another pass (as every node pass does) queues nothing more.
    assert p.assemble() == []
    with p.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1
    completed = [e for e in p.audit.events() if e["type"] == "study.complete"]
    assert [e["instances"] for e in completed] == [len(files)]
    assert p.audit.verify().ok


#: The index is written by several processes: SQLite (write lock taken first) and PostgreSQL
#: (row locks), when CI gives one.
BACKENDS = pytest.mark.parametrize(
    "database_url",
    [
        pytest.param("", id="sqlite"),
        pytest.param(
            POSTGRES_URL,
            id="postgresql",
            marks=pytest.mark.skipif(
                not POSTGRES_URL, reason="MEDVISION_TEST_POSTGRES_URL is not set"
            ),
        ),
    ],
)


@BACKENDS
def test_one_study_over_associations_on_different_processes_is_assembled_once(
    start_pool: Callable[..., RunningPool], chest_ct_dir: Path, database_url: str
) -> None:
    p = start_pool(3, database_url=database_url)
    files = sorted(chest_ct_dir.glob("*.dcm"))
    parts = [files[i::3] for i in range(3)]
    with ThreadPoolExecutor(3) as ex:
        sent = list(ex.map(lambda part: _storescu(p.port, part), parts))
    assert [r.returncode for r in sent] == [0, 0, 0], [r.stderr for r in sent]
    # Each association was served by its own process: each counts one association and
    # its third of the study.
    wait_for(
        "every acceptor to report its instances",
        lambda: sum(a.instances for a in p.acceptors().values()) == len(files),
        30,
        0.2,
    )
    rows = p.acceptors()
    assert sorted(rows) == [1, 2, 3]
    assert [rows[s].associations for s in (1, 2, 3)] == [1, 1, 1]
    assert sorted(rows[s].instances for s in (1, 2, 3)) == sorted(map(len, parts))
    assert len({rows[s].pid for s in (1, 2, 3)} | {os.getpid()}) == 4
    _one_study_one_job(p, files)


@BACKENDS
def test_sigkill_of_one_acceptor_loses_nothing_it_acknowledged(
    start_pool: Callable[..., RunningPool], chest_ct_dir: Path, database_url: str
) -> None:
    p = start_pool(2, database_url=database_url)
    files = sorted(chest_ct_dir.glob("*.dcm"))
    originals = {str(ds.SOPInstanceUID): ds for ds in (dcmread(f) for f in files)}
    first, second = list(originals.values())[0::2], list(originals.values())[1::2]
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CT, IMPLICIT_LE)
    # The sender gives up on the association of the killed process when its wait for the
    # C-STORE response times out: 5 s here, not pynetdicom's default 30 s (test time).
    ae.dimse_timeout = 5
    # The first connection goes to acceptor 1, the second to acceptor 2 (fewest open).
    a = ae.associate("127.0.0.1", p.port, ae_title="MEDVISION")
    b = ae.associate("127.0.0.1", p.port, ae_title="MEDVISION")
    assert a.is_established and b.is_established
    victim = p.pool.processes()[1]
    acked: list[str] = []

    def store(assoc: Any, ds: Dataset) -> bool:
        if not assoc.is_established:  # aborted: nothing more goes over it
            return False
        status = assoc.send_c_store(ds)
        if status and status.Status == 0x0000:
            acked.append(str(ds.SOPInstanceUID))
            return True
        return False

    for i in range(8):
        assert store(a, first[i]) and store(b, second[i])
    os.kill(victim, signal.SIGKILL)  # right after its last acknowledgement
    # The killed process's association breaks; the other one keeps being served.
    rest_of_first = [ds for ds in first[8:] if not store(a, ds)]
    assert rest_of_first, "the association on the killed acceptor went on"
    assert all(store(b, ds) for ds in second[8:])
    b.release()
    a.abort()
    wait_for(
        "acceptor 1 to be started again",
        lambda: p.pool.processes().get(1) not in (None, victim),
        60,
        0.2,
    )
    wait_for("every acknowledged instance in the index", lambda: set(acked) <= p.indexed(), 30)
    with p.db.session() as session:
        paths = {
            u: path for u, path in session.execute(select(Instance.sop_instance_uid, Instance.path))
        }
    for uid in acked:  # the files are the acknowledged instances, pixel for pixel
        stored = dcmread(p.settings.spool_dir / paths[uid])
        assert stored.SOPInstanceUID == uid
        assert stored.PixelData == originals[uid].PixelData
    row = p.acceptors()[1]
    assert (row.restarts, row.state, row.pid) == (1, "serving", p.pool.processes()[1])
    # The sender sends what was not acknowledged again (as a PACS does after an abort),
    # and the study is whole, assembled once.
    again = ae.associate("127.0.0.1", p.port, ae_title="MEDVISION")
    assert again.is_established
    assert all(store(again, ds) for ds in rest_of_first)
    again.release()
    _one_study_one_job(p, files)


def test_association_limit_holds_over_all_processes(
    start_pool: Callable[..., RunningPool],
) -> None:
    p = start_pool(3, max_associations=2)
    ae = AE(ae_title="PACS")
    ae.add_requested_context(VERIFICATION)
    first = ae.associate("127.0.0.1", p.port, ae_title="MEDVISION")
    second = ae.associate("127.0.0.1", p.port, ae_title="MEDVISION")
    assert first.is_established and second.is_established
    try:
        # The third lands on the third process, which holds none: the node holds two.
        third = ae.associate("127.0.0.1", p.port, ae_title="MEDVISION")
        assert third.is_rejected
        first.release()

        def admitted() -> bool:
            assoc = ae.associate("127.0.0.1", p.port, ae_title="MEDVISION")
            if assoc.is_established:
                assoc.release()
                return True
            return False

        wait_for("a slot to be free again", admitted, 30, 0.2)
    finally:
        second.release()


def test_silent_connections_are_limited_per_address_for_the_node(
    start_pool: Callable[..., RunningPool],
) -> None:
    p = start_pool(3, max_connections_per_host=2, artim_timeout_s=120)
    held = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(4)]
    try:
        for sock in held:
            sock.settimeout(0.5)

        def closed(sock: socket.socket) -> bool:
            try:
                return sock.recv(1) == b""
            except TimeoutError:
                return False

        # Two stay open (waiting for an A-ASSOCIATE-RQ), the others are closed at once,
        # although each process holds fewer than two.
        wait_for("the extra connections to be closed", lambda: sum(map(closed, held)) == 2, 30)
        assert not any(closed(s) for s in held[:2])
    finally:
        for sock in held:
            sock.close()
    assert p.pool.guard.pending() <= 2


def test_tls_port_is_served_by_the_acceptor_processes(
    start_pool: Callable[..., RunningPool], tmp_path: Path, chest_ct_dir: Path
) -> None:
    """The node listens on its DICOM TLS port too; the handshake runs in the acceptor that
    gets the connection, so an untrusted caller is refused (and audited) there."""
    certs = make_certs(tmp_path / "certs")
    p = start_pool(
        2,
        dicom_tls_port=free_port(),
        dicom_tls_cert=certs.node.cert,
        dicom_tls_key=certs.node.key,
        dicom_tls_ca=certs.ca,
    )
    files = sorted(chest_ct_dir.glob("*.dcm"))[:2]

    def storescu_tls(key: Path, cert: Path, part: list[Path]) -> Any:
        return dcmtk(
            "storescu", "+tls", key, cert, "+cf", certs.ca, "-aet", "PACS", "-aec",
            "MEDVISION", "127.0.0.1", p.pool.tls_port, *part, timeout=60,
        )  # fmt: skip

    for part in ([files[0]], [files[1]]):  # one association each, on each process
        sent = storescu_tls(certs.pacs.key, certs.pacs.cert, part)
        assert sent.returncode == 0, sent.stderr
    rogue = storescu_tls(certs.rogue.key, certs.rogue.cert, files[:1])
    assert rogue.returncode != 0
    wait_for("both instances in the index", lambda: len(p.indexed()) == 2, 30)
    accepted = [e for e in p.audit.events() if e["type"] == "association.accepted"]
    assert len(accepted) == 2 and all(e["tls"] is True for e in accepted), accepted
    wait_for(
        "the refused handshake in the audit trail",
        lambda: [e for e in p.audit.events() if e["type"] == "association.rejected"],
        30,
    )
    wait_for(
        "each acceptor to report its instance",
        lambda: sorted(a.instances for a in p.acceptors().values()) == [1, 1],
        30,
        0.2,
    )
    # The plain port serves beside it.
    assert _storescu(p.port, files[:1]).returncode == 0


def test_status_workers_and_metrics_show_the_acceptor_processes(
    tmp_path: Path, chest_ct_dir: Path
) -> None:
    node = NodeProcess(tmp_path / "data", scp_processes=2, quiet_period_s=600).start()
    try:
        files = sorted(chest_ct_dir.glob("*.dcm"))[:6]
        for part in (files[:3], files[3:]):  # one association each, on each process
            assert _storescu(node.dicom_port, part).returncode == 0

        def acceptors() -> list[dict[str, Any]]:
            shown = [w for w in node.get("/workers") if w["kind"] == "acceptor"]
            if sum(w["acceptor"]["instances"] for w in shown) == len(files):
                return shown
            return []

        shown = wait_for("the acceptors' counts", acceptors, 30, 0.2)
        assert [w["acceptor"]["slot"] for w in shown] == [1, 2]
        assert all(w["alive"] and w["state"] == "serving" for w in shown)
        assert [w["acceptor"]["instances"] for w in shown] == [3, 3]
        pids = {w["pid"] for w in shown}
        assert len(pids) == 2 and node.proc is not None and node.proc.pid not in pids
        request = urllib.request.Request(
            node.url + "/metrics", headers={"Authorization": f"Bearer {node.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            metrics = resp.read().decode()

        def value(line: str) -> float:
            found = re.search(rf"^{re.escape(line)} (\S+)$", metrics, re.MULTILINE)
            assert found, (line, metrics)
            return float(found.group(1))

        assert value('medvision_scp_instances_total{outcome="stored"}') == len(files)
        assert value("medvision_scp_associations_total") == 2
        assert value('medvision_scp_acceptors{state="serving"}') == 2
        size = sum(w["acceptor"]["bytes_received"] for w in shown)
        assert value("medvision_scp_received_bytes_total") == size > 0
        status = node.status()
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0] == "acceptors:", status.stdout
        for pid in pids:
            assert any(f"serving    pid {pid};" in line for line in lines[1:3]), status.stdout
    finally:
        node.stop()
