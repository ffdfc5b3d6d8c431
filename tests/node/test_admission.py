"""Deny by default: who may open an association, against dcmtk's echoscu and pynetdicom.

Each rejection is checked as the peer sees it (dcmtk's message), in the audit trail (who,
from where, why, as a security alert) and in the log (calling AE and address).
"""

from __future__ import annotations

import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pynetdicom import AE
from sqlalchemy import func, select

from medvision.audit import to_message, to_xml
from medvision.config import Settings
from medvision.db import Instance
from tests.node.peers import dcmtk, wait_for

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _echo(port: int, aet: str, called: str = "MEDVISION"):  # noqa: ANN202
    return dcmtk("echoscu", "-aet", aet, "-aec", called, "127.0.0.1", port)


def _rejections(scp) -> list[dict]:  # noqa: ANN001
    return [e for e in scp.audit.events() if e["type"] == "association.rejected"]


def test_no_peers_configured_accepts_no_one(start_scp, caplog: pytest.LogCaptureFixture) -> None:
    scp = start_scp(accept_unknown_calling_ae=False)
    with caplog.at_level(logging.WARNING, logger="medvision.scp"):
        bad = _echo(scp.port, "ANYONE")
    assert bad.returncode != 0
    assert "Calling AE Title Not Recognized" in bad.stderr + bad.stdout
    (event,) = _rejections(scp)
    assert (event["calling_aet"], event["calling_host"]) == ("ANYONE", "127.0.0.1")
    assert event["security_alert"] is True and event["outcome"] == "failure"
    assert "no calling AE titles are configured" in event["reason"]
    assert any("ANYONE" in r.message and "127.0.0.1" in r.message for r in caplog.records)
    assert scp.audit.verify().ok


def test_explicit_accept_unknown_lets_anyone_in(start_scp) -> None:
    scp = start_scp(accept_unknown_calling_ae=True)
    assert _echo(scp.port, "ANYONE").returncode == 0
    assert _rejections(scp) == []


def test_configured_modality_may_call_without_an_allow_list(start_scp) -> None:
    pacs = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
    scp = start_scp(accept_unknown_calling_ae=False, modalities={"pacs": pacs})
    good = _echo(scp.port, "ORTHANC")
    assert good.returncode == 0, good.stderr
    bad = _echo(scp.port, "INTRUDER")
    assert "Calling AE Title Not Recognized" in bad.stderr + bad.stdout
    (event,) = _rejections(scp)
    assert event["calling_aet"] == "INTRUDER"
    assert "neither modalities nor allowed_calling_aets" in event["reason"]


def test_modality_calling_hosts_bind_its_ae_title_to_an_address(start_scp) -> None:
    # The PACS calls from 127.0.0.1; an impostor using its AE title from another loopback
    # address (the whole 127/8 is ours on Linux) is refused.
    pacs = {
        "ae_title": "ORTHANC",
        "host": "pacs.example.org",
        "port": 4242,
        "calling_hosts": ["127.0.0.1"],
    }
    scp = start_scp(accept_unknown_calling_ae=False, modalities={"pacs": pacs})
    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(VERIFICATION)
    ok = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION", bind_address=("127.0.0.1", 0))
    assert ok.is_established
    ok.release()
    spoof = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION", bind_address=("127.0.0.2", 0))
    assert spoof.is_rejected
    (event,) = _rejections(scp)
    assert (event["calling_aet"], event["calling_host"]) == ("ORTHANC", "127.0.0.2")
    assert "calling_hosts" in event["reason"]


def test_called_ae_title_must_be_ours(start_scp) -> None:
    scp = start_scp(allowed_calling_aets=["ORTHANC"], accept_unknown_calling_ae=False)
    wrong = _echo(scp.port, "ORTHANC", called="ANY-SCP")  # echoscu's default called AE
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr + wrong.stdout
    (event,) = _rejections(scp)
    assert event["called_aet"] == "ANY-SCP"
    assert "not ours" in event["reason"]


def test_rejections_are_exported_as_atna_security_alerts(start_scp) -> None:
    scp = start_scp(accept_unknown_calling_ae=False)
    assert _echo(scp.port, "STRANGER").returncode != 0
    (event,) = _rejections(scp)
    message = to_message(event)
    assert message is not None
    xml = to_xml(message).decode()
    assert "Security Alert" in xml and "Node Authentication" in xml
    assert "STRANGER" in xml and "127.0.0.1" in xml


def test_http_listens_on_loopback_unless_tls_or_told() -> None:
    assert Settings().http_host == "127.0.0.1"
    assert Settings(bind_address="10.0.0.2").http_host == "127.0.0.1"
    assert Settings(http_bind_address="0.0.0.0").http_host == "0.0.0.0"
    tls = Settings(tls_cert="node.pem", tls_key="node.key", bind_address="10.0.0.2")
    assert tls.http_host == "10.0.0.2"


def test_allow_lists_take_addresses_and_networks_only() -> None:
    assert Settings(allowed_hosts=["10.0.0.0/24", "10.1.2.3"]).allowed_hosts
    with pytest.raises(ValueError, match="not an IP address or network"):
        Settings(allowed_hosts=["pacs.example.org"])


# -- strangers cannot use up the door -------------------------------------------------------


def _connect(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)  # _closed_by_peer only looks
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the node has closed this connection (never sends on it: it said nothing)."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionError:  # reset
        return True


def _stranger_associations(port: int, count: int) -> list[bool]:
    """``count`` associations from an unknown AE title at 127.0.0.3, four at a time;
    whether each was rejected."""
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(CT)
    ae.acse_timeout = 30

    def one(_: int) -> bool:
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDVISION", bind_address=("127.0.0.3", 0))
        if assoc.is_established:
            assoc.abort()
        return bool(assoc.is_rejected)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


def test_strangers_cannot_use_up_the_door(start_scp, chest_ct_dir: Path) -> None:
    """200 silent connections from 200 addresses, 50 more from one, and 200 associations
    from an unknown AE title, while the PACS (dcmtk's storescu, AE title PACS from
    127.0.0.1) stores a study. The ARTIM timer is long here, so the silent connections are
    really held while the PACS stores: it gets in because strangers never take its slots,
    not because they timed out."""
    pacs = {"ae_title": "PACS", "host": "127.0.0.1", "port": 4242, "calling_hosts": ["127.0.0.1"]}
    scp = start_scp(
        accept_unknown_calling_ae=False,
        modalities={"pacs": pacs},
        max_associations=2,
        artim_timeout_s=120,
    )
    files = sorted(chest_ct_dir.glob("*.dcm"))[:20]
    held: list[socket.socket] = []
    try:
        held += [
            _connect(f"127.0.0.{2 + i}" if i < 199 else "127.0.1.1", scp.port) for i in range(200)
        ]
        flood = [_connect("127.0.0.250", scp.port) for _ in range(50)]
        held += flood
        guard = scp.scp._guard
        # One address keeps max_connections_per_host (8) open; the rest are closed at once.
        wait_for(
            "the flood from one address to be cut",
            lambda: sum(map(_closed_by_peer, flood)) == 50 - 8,
        )
        with ThreadPoolExecutor(1) as pool:
            strangers = pool.submit(_stranger_associations, scp.port, 200)
            sent = dcmtk(
                "storescu", "-aet", "PACS", "-aec", "MEDVISION", "127.0.0.1", scp.port, *files
            )
            rejected = strangers.result(timeout=120)
        assert sent.returncode == 0, sent.stderr + sent.stdout
        # Every silent connection the node still serves is within max_pending_connections.
        assert guard.pending() <= scp.settings.max_pending_connections
        assert not all(map(_closed_by_peer, held))  # they were held, not timed out
    finally:
        for sock in held:
            sock.close()
    scp.flush()
    with scp.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 20
    assert all(rejected) and len(rejected) == 200
    strangers_audited = [e for e in _rejections(scp) if e["calling_aet"] == "STRANGER"]
    assert len(strangers_audited) == 200
    assert {e["calling_host"] for e in strangers_audited} == {"127.0.0.3"}
    accepted = [e for e in scp.audit.events() if e["type"] == "association.accepted"]
    assert [e["calling_aet"] for e in accepted] == ["PACS"]
    assert scp.audit.verify().ok


def test_artim_timer_closes_silent_connections(start_scp) -> None:
    scp = start_scp(accept_unknown_calling_ae=False, artim_timeout_s=1)
    silent = _connect("127.0.0.2", scp.port)
    try:
        silent.settimeout(30)
        assert silent.recv(1) == b""  # closed by the node, not by us
    finally:
        silent.close()
    wait_for("the guard to forget it", lambda: scp.scp._guard.pending() == 0)
