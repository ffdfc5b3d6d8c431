"""``GET /workers`` and ``/metrics`` on the processes that share one database, their rows
written by the objects the node itself uses: the receivers' :class:`ReceiverRow` (what
``medvision serve`` with a ``node_name`` beats every ``poll_interval_s``) and the DICOM
acceptor processes' :class:`AcceptorReporter` (docs/scaling.md, docs/node.md)."""

from __future__ import annotations

import os
import socket
from collections import Counter
from datetime import timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from medvision.db import Receiver, utcnow
from medvision.node._acceptors import AcceptorReporter, set_state
from medvision.node._receivers import ReceiverRow
from tests.api.conftest import Client, Server, ServerFactory

STALE_S = 30.0


def _receivers(client: Client) -> dict[str, dict[str, Any]]:
    answer = client.get("/workers")
    assert answer.status == 200, answer.body
    return {w["name"]: w for w in answer.json() if w["kind"] == "receiver"}


def _samples(client: Client, name: str) -> dict[str, float]:
    """The samples called ``name`` by their label values (an unlabelled one under "")."""
    answer = client.get("/metrics")
    assert answer.status == 200, answer.body
    found = {
        ",".join(sample.labels.values()): sample.value
        for family in text_string_to_metric_families(answer.body.decode())
        for sample in family.samples
        if sample.name == name
    }
    assert found, f"no {name} in /metrics"
    return found


def _silence(db: Any, name: str, seconds: float) -> None:
    """Receiver ``name`` last beat ``seconds`` ago (killed, or its host lost)."""
    with db.session() as session:
        session.execute(
            update(Receiver)
            .where(Receiver.name == name)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_two_receivers_on_one_database_are_listed_stopped_and_dead(
    server_factory: ServerFactory,
) -> None:
    api = server_factory(worker_stale_s=STALE_S)
    rad, qa = api.client("rad"), api.client("qa")
    a, b = ReceiverRow(api.db, "rx-a"), ReceiverRow(api.db, "rx-b")
    a.beat({"1.2.3", "1.2.4"})  # two studies acknowledged on rx-a, not yet indexed
    b.beat(set())

    shown = _receivers(rad)
    assert sorted(shown) == ["rx-a", "rx-b"]
    for name, busy in (("rx-a", 2), ("rx-b", 0)):
        entry = shown[name]
        assert (entry["state"], entry["alive"]) == ("serving", True)
        assert entry["receiver"] == {"busy_studies": busy}
        assert (entry["host"], entry["pid"]) == (socket.gethostname(), os.getpid())
        assert entry["acceptor"] is None and entry["models"] == {}
    assert "1.2.3" not in str(rad.get("/workers").json())  # counts, never UIDs
    assert _samples(qa, "medvision_receivers") == {"serving": 2, "stopped": 0, "dead": 0}

    b.beat((), state="stopped")  # rx-b stopped cleanly
    shown = _receivers(rad)
    assert (shown["rx-b"]["state"], shown["rx-b"]["alive"]) == ("stopped", False)
    assert (shown["rx-a"]["state"], shown["rx-a"]["alive"]) == ("serving", True)
    assert _samples(qa, "medvision_receivers") == {"serving": 1, "stopped": 1, "dead": 0}

    # rx-a stops reporting: taken for dead, by the rule every assembler applies to it.
    _silence(api.db, "rx-a", STALE_S + 1)
    shown = _receivers(rad)
    assert (shown["rx-a"]["state"], shown["rx-a"]["alive"]) == ("serving", False)
    assert shown["rx-a"]["receiver"] == {"busy_studies": 2}  # in its journal until it is back
    assert ReceiverRow(api.db, "rx-c").others_busy(STALE_S) == set()
    assert _samples(qa, "medvision_receivers") == {"serving": 0, "stopped": 1, "dead": 1}
    # A stopped receiver stays "stopped", however old its row.
    _silence(api.db, "rx-b", 10 * STALE_S)
    assert _samples(qa, "medvision_receivers") == {"serving": 0, "stopped": 1, "dead": 1}

    a.beat(set())  # rx-a is back and has indexed what it had
    shown = _receivers(rad)
    assert (shown["rx-a"]["alive"], shown["rx-a"]["receiver"]) == (True, {"busy_studies": 0})
    assert _samples(qa, "medvision_receivers") == {"serving": 1, "stopped": 1, "dead": 0}


def test_the_workers_schema_documents_the_receivers(server_factory: ServerFactory) -> None:
    schemas = server_factory().client().get("/openapi.json").json()["components"]["schemas"]
    assert schemas["ReceiverStats"]["properties"]["busy_studies"]["type"] == "integer"
    assert "receiver" in schemas["WorkerOut"]["properties"]
    assert "receiver" in schemas["WorkerOut"]["description"]


def _reporter(api: Server, receiver: str, slot: int, **counts: int) -> AcceptorReporter:
    reporter = AcceptorReporter(api.db, slot, lambda: Counter(counts), receiver)
    reporter.start()
    reporter.report()
    return reporter


def test_metrics_sum_every_acceptor_process_of_every_receiver(
    server_factory: ServerFactory,
) -> None:
    """Each acceptor process writes its own counts; ``/metrics`` adds up all of them,
    across receivers and across a slot's restarts (a new process carries on from the last
    counts its predecessor wrote)."""
    api = server_factory(worker_stale_s=STALE_S)
    qa = api.client("qa")
    reporters: list[AcceptorReporter] = []
    try:
        reporters += [
            _reporter(api, "rx-a", 1, associations=2, instances=10, duplicates=1, bytes=1000),
            _reporter(api, "rx-a", 2, associations=1, instances=5, bytes=500, active=1),
            _reporter(
                api, "rx-b", 1, associations=3, instances=6, duplicates=2, refused=1, active=2
            ),
        ]
        first, _, on_b = reporters
        # rx-a's first acceptor dies; the node records it and starts the slot again.
        first.stop("restarting")
        set_state(api.db, 1, "restarting", restarted=True, receiver="rx-a")
        reporters.insert(
            0,
            _reporter(api, "rx-a", 1, associations=1, instances=4, refused=1, bytes=400, active=1),
        )
        on_b.stop()  # rx-b's acceptor stopped: its counts stay, its open ones do not
        assert _samples(qa, "medvision_scp_associations_total") == {"": 2 + 1 + 1 + 3}
        assert _samples(qa, "medvision_scp_instances_total") == {
            "stored": 10 + 4 + 5 + 6,
            "duplicate": 1 + 2,
            "refused": 1 + 1,
        }
        assert _samples(qa, "medvision_scp_received_bytes_total") == {"": 1000 + 400 + 500}
        assert _samples(qa, "medvision_scp_active_associations") == {"": 1 + 1}
        assert _samples(qa, "medvision_scp_acceptor_restarts_total") == {"": 1}
        assert _samples(qa, "medvision_scp_acceptors") == {
            "serving": 2,
            "starting": 0,
            "restarting": 0,
            "stopped": 1,
            "dead": 0,
        }
        shown = {
            w["name"]: w["acceptor"]
            for w in api.client("rad").get("/workers").json()
            if w["kind"] == "acceptor"
        }
        assert sorted(shown) == ["rx-a/acceptor-1", "rx-a/acceptor-2", "rx-b/acceptor-1"]
        assert (shown["rx-a/acceptor-1"]["instances"], shown["rx-a/acceptor-1"]["restarts"]) == (
            14,
            1,
        )
    finally:
        for reporter in reversed(reporters):  # the restarted process's word last
            reporter.stop()
