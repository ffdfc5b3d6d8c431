"""DICOM TLS against real peers: dcmtk's storescu/echoscu/storescp with ``+tls`` and Orthanc
with DICOM TLS, in both directions.

What is checked is what an operator sees: the peer's own success or error, the instance in
the node's index or the PACS, the audit trail (who, from where, why, as a security alert)
and the node's log line.
"""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from medvision.audit import to_message, to_xml, validation_errors
from medvision.config import Modality, Settings
from medvision.db import Instance
from medvision.node._tls import BCP195_CIPHERS
from tests.node.certs import Certs, make_certs
from tests.node.outbox import PendingResults
from tests.node.peers import DCMTK, Orthanc, dcmtk, free_port, stop_process, wait_for

SR_STUDY = "1.2.826.0.1.3680043.8.498.77"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _tls_settings(certs: Certs, **more: Any) -> dict[str, Any]:
    return {
        "dicom_tls_port": free_port(),
        "dicom_tls_cert": certs.node.cert,
        "dicom_tls_key": certs.node.key,
        "dicom_tls_ca": certs.ca,
        **more,
    }


def _one_slice(chest_ct_dir: Path) -> Path:
    """A real CT slice (uncompressed: storescu need not transcode)."""
    return sorted(chest_ct_dir.glob("*.dcm"))[0]


def _storescu_tls(port: int, key: Path, cert: Path, ca: Path, *files: Path, aet: str = "PACS"):  # noqa: ANN202
    return dcmtk(
        "storescu", "+tls", key, cert, "+cf", ca, "-aet", aet, "-aec", "MEDVISION",
        "127.0.0.1", port, *files, timeout=60,
    )  # fmt: skip


def _events(scp, kind: str) -> list[dict]:  # noqa: ANN001
    return [e for e in scp.audit.events() if e["type"] == kind]


def _stored(scp) -> int:  # noqa: ANN001
    scp.flush()
    with scp.db.session() as session:
        return len(list(session.scalars(select(Instance))))


# -- the node's SCP: dcmtk storescu ----------------------------------------------------------


def test_storescu_with_a_trusted_certificate_stores_over_tls(
    start_scp: Callable[..., Any], certs: Certs, chest_ct_dir: Path
) -> None:
    scp = start_scp(**_tls_settings(certs))
    sent = _storescu_tls(scp.scp.tls_port, certs.pacs.key, certs.pacs.cert, certs.ca,
                         _one_slice(chest_ct_dir))  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert _stored(scp) == 1
    (accepted,) = _events(scp, "association.accepted")
    assert accepted["tls"] is True and "commonName=PACS" in accepted["tls_subject"]
    assert _events(scp, "association.rejected") == []
    # The plain port still serves beside it (configurable per port).
    plain = dcmtk("echoscu", "-aet", "PACS", "-aec", "MEDVISION", "127.0.0.1", scp.port)
    assert plain.returncode == 0, plain.stderr


def test_untrusted_client_certificate_is_refused_and_audited(
    start_scp: Callable[..., Any],
    certs: Certs,
    chest_ct_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scp = start_scp(**_tls_settings(certs))
    with caplog.at_level(logging.WARNING, logger="medvision.scp"):
        # A well-formed certificate from a CA the node does not trust; storescu trusts us.
        sent = _storescu_tls(scp.scp.tls_port, certs.rogue.key, certs.rogue.cert, certs.ca,
                             _one_slice(chest_ct_dir))  # fmt: skip
        assert sent.returncode != 0
        (event,) = wait_for("the audit event", lambda: _events(scp, "association.rejected"), 10)
    assert _stored(scp) == 0
    assert event["calling_host"] == "127.0.0.1" and event["tls"] is True
    assert event["security_alert"] is True and event["outcome"] == "failure"
    assert "certificate is not trusted" in event["reason"], event["reason"]
    assert any(
        "127.0.0.1" in r.message and "TLS handshake failed" in r.message for r in caplog.records
    )
    # For the hospital's audit repository: a Node Authentication security alert naming the
    # peer's address.
    message = to_message(event)
    assert message is not None
    xml = to_xml(message)
    assert validation_errors(xml) == []
    assert b"Security Alert" in xml and b"Node Authentication" in xml and b"127.0.0.1" in xml
    assert scp.audit.verify().ok


def test_client_without_a_certificate_is_refused(
    start_scp: Callable[..., Any], certs: Certs
) -> None:
    scp = start_scp(**_tls_settings(certs))
    anonymous = dcmtk(
        "echoscu", "+tla", "+cf", certs.ca, "-aet", "PACS", "-aec", "MEDVISION",
        "127.0.0.1", scp.scp.tls_port,
    )  # fmt: skip
    assert anonymous.returncode != 0
    (event,) = wait_for("the audit event", lambda: _events(scp, "association.rejected"), 10)
    assert "presented no certificate" in event["reason"], event["reason"]
    assert _events(scp, "association.accepted") == []


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_plain_dicom_on_the_tls_port_and_old_tls_versions_are_refused(
    start_scp: Callable[..., Any], certs: Certs
) -> None:
    scp = start_scp(**_tls_settings(certs))
    plain = dcmtk("echoscu", "-aet", "PACS", "-aec", "MEDVISION", "127.0.0.1", scp.scp.tls_port)
    assert plain.returncode != 0
    (event,) = wait_for("the audit event", lambda: _events(scp, "association.rejected"), 10)
    assert "did not speak TLS" in event["reason"], event["reason"]

    # TLS 1.1 with a trusted certificate: below the profile's minimum.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(certs.ca)
    old.load_cert_chain(certs.pacs.cert, certs.pacs.key)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", scp.scp.tls_port), 5) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="localhost")
    wait_for("the second audit event", lambda: len(_events(scp, "association.rejected")) == 2, 10)
    assert "below 1.2" in _events(scp, "association.rejected")[1]["reason"]

    # The profile's cipher suites, and only those, for TLS 1.2.
    tls12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls12.load_verify_locations(certs.ca)
    tls12.load_cert_chain(certs.pacs.cert, certs.pacs.key)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    tls12.set_ciphers("AES128-SHA256:ECDHE-RSA-AES128-SHA256")  # not BCP 195
    with socket.create_connection(("127.0.0.1", scp.scp.tls_port), 5) as raw:
        with pytest.raises(ssl.SSLError):
            tls12.wrap_socket(raw, server_hostname="localhost")
    wait_for("the third audit event", lambda: len(_events(scp, "association.rejected")) == 3, 10)
    assert "cipher suite" in _events(scp, "association.rejected")[2]["reason"]
    tls12.set_ciphers(BCP195_CIPHERS)
    with socket.create_connection(("127.0.0.1", scp.scp.tls_port), 5) as raw:
        with tls12.wrap_socket(raw, server_hostname="localhost") as secured:
            assert secured.version() == "TLSv1.2"
            assert secured.cipher()[0] in BCP195_CIPHERS.split(":")


def test_tls_only_and_modalities_marked_tls_cannot_use_the_plain_port(
    start_scp: Callable[..., Any], certs: Certs
) -> None:
    pacs = {"ae_title": "PACS", "host": "127.0.0.1", "port": 4242, "tls": True}
    scp = start_scp(
        **_tls_settings(certs), accept_unknown_calling_ae=False, modalities={"pacs": pacs}
    )
    plain = dcmtk("echoscu", "-aet", "PACS", "-aec", "MEDVISION", "127.0.0.1", scp.port)
    assert plain.returncode != 0
    (event,) = _events(scp, "association.rejected")
    assert event["calling_aet"] == "PACS" and event["tls"] is False
    assert "must call over DICOM TLS" in event["reason"]
    secured = dcmtk(
        "echoscu", "+tls", certs.pacs.key, certs.pacs.cert, "+cf", certs.ca,
        "-aet", "PACS", "-aec", "MEDVISION", "127.0.0.1", scp.scp.tls_port,
    )  # fmt: skip
    assert secured.returncode == 0, secured.stderr

    only = start_scp(**_tls_settings(certs, dicom_tls_only=True))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", only.port), 5).close()


def test_a_silent_connection_does_not_hold_up_the_tls_listener(
    start_scp: Callable[..., Any], certs: Certs
) -> None:
    # pynetdicom would run the handshake in its accept loop: one connection that never
    # says anything would keep every PACS out until it went away.
    scp = start_scp(**_tls_settings(certs, artim_timeout_s=30))
    silent = socket.create_connection(("127.0.0.1", scp.scp.tls_port), 5)
    try:
        started = time.monotonic()
        echo = dcmtk(
            "echoscu", "+tls", certs.pacs.key, certs.pacs.cert, "+cf", certs.ca,
            "-aet", "PACS", "-aec", "MEDVISION", "127.0.0.1", scp.scp.tls_port, timeout=20,
        )  # fmt: skip
        assert echo.returncode == 0, echo.stderr
        assert time.monotonic() - started < 10
    finally:
        silent.close()
    assert _events(scp, "association.rejected") == []  # silence is not a refusal


def test_tls_settings_are_checked_at_start(tmp_path: Path, certs: Certs) -> None:
    from medvision.config import ConfigError
    from medvision.node._admission import refusal
    from medvision.node._tls import server_context

    settings = Settings(**_tls_settings(certs, dicom_tls_key=tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="dicom_tls_cert/dicom_tls_key"):
        server_context(settings)
    with pytest.raises(ValueError, match="dicom_tls_port needs"):
        Settings(dicom_tls_port=2762)
    with pytest.raises(ValueError, match="modalities.pacs has tls"):
        Settings(modalities={"pacs": Modality(ae_title="P", host="h", port=1, tls=True)})
    # Results go to it over TLS, but without a TLS listener it can only call the plain port.
    sends_only = Settings(
        dicom_tls_cert=certs.node.cert,
        dicom_tls_key=certs.node.key,
        dicom_tls_ca=certs.ca,
        modalities={"pacs": Modality(ae_title="P", host="h", port=1, tls=True)},
    )
    assert refusal(sends_only, "P", "MEDVISION", "127.0.0.1") is None


# -- the sender: dcmtk storescp ----------------------------------------------------------------


def _storescp_tls(port: int, out: Path, server: Any, ca: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(DCMTK / "storescp"), "+tls", str(server.key), str(server.cert), "+cf", str(ca),
         "-aet", "STORESCP", "-od", str(out), str(port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for("storescp listening", lambda: _listening(port), 10)
    return proc


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sender_delivers_to_storescp_over_tls(
    tmp_path: Path, shared_data: Path, certs: Certs
) -> None:
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    pacs = Modality(ae_title="STORESCP", host="127.0.0.1", port=port, tls=True)
    pending = PendingResults(
        tmp_path, shared_data, pacs, SR_STUDY,
        dicom_tls_cert=certs.node.cert, dicom_tls_key=certs.node.key, dicom_tls_ca=certs.ca,
    )  # fmt: skip
    # storescp requires our certificate (-rc, its default) and trusts the test CA.
    scp = _storescp_tls(port, out, certs.pacs, certs.ca)
    try:
        assert pending.sender.send_due() == 2, [r.last_error for r in pending.rows()]
    finally:
        stop_process(scp)
    arrived = sorted(str(dcmread(p).SOPInstanceUID) for p in out.iterdir())
    assert arrived == sorted(r.sop_instance_uid for r in pending.rows())
    (started,) = [e for e in pending.audit.events() if e["type"] == "results.send_started"]
    assert started["tls"] is True
    pending.close()


@pytest.mark.parametrize(
    ("server", "trusts", "why"),
    [
        # An impostor on the PACS's port, with a certificate from a CA we do not trust.
        ("rogue", "ca", "the peer's certificate is not trusted"),
        # The right PACS, which does not trust our certificate (TLS 1.3: its alert comes
        # after our side of the handshake is done).
        ("pacs", "rogue_ca", "the peer does not trust our certificate"),
    ],
)
def test_sender_says_why_a_tls_destination_was_not_reached(
    tmp_path: Path, shared_data: Path, certs: Certs, server: str, trusts: str, why: str
) -> None:
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    pacs = Modality(ae_title="STORESCP", host="127.0.0.1", port=port, tls=True)
    pending = PendingResults(
        tmp_path, shared_data, pacs, SR_STUDY,
        dicom_tls_cert=certs.node.cert, dicom_tls_key=certs.node.key, dicom_tls_ca=certs.ca,
    )  # fmt: skip
    scp = _storescp_tls(port, out, getattr(certs, server), getattr(certs, trusts))
    try:
        assert pending.sender.send_due() == 0
    finally:
        stop_process(scp)
    assert list(out.iterdir()) == []
    rows = pending.rows()
    assert all(r.state == "pending" for r in rows)  # retried later, as any failed send
    assert "DICOM TLS handshake failed" in rows[0].last_error, rows[0].last_error
    assert why in rows[0].last_error
    failed = [e for e in pending.audit.events() if e["type"] == "results.send_failed"]
    assert len(failed) == 2 and why in failed[0]["reason"]
    pending.close()


# -- Orthanc with DICOM TLS, both directions ----------------------------------------------------


def _orthanc_tls(tmp_path: Path, certs: Certs, node_tls_port: int) -> Orthanc:
    return Orthanc(
        tmp_path / "orthanc",
        {"medvision": ("MEDVISION", node_tls_port, {"UseDicomTls": True})},
        config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(certs.pacs.cert),
            "DicomTlsPrivateKey": str(certs.pacs.key),
            "DicomTlsTrustedCertificates": str(certs.ca),
            "DicomTlsRemoteCertificateRequired": True,
        },
    )


def test_orthanc_pushes_to_the_node_over_tls_and_receives_results_over_tls(
    start_scp: Callable[..., Any],
    tmp_path: Path,
    shared_data: Path,
    certs: Certs,
    chest_ct_dir: Path,
) -> None:
    tls_port = free_port()
    orthanc = _orthanc_tls(tmp_path, certs, tls_port).start()
    try:
        scp = start_scp(
            **_tls_settings(certs, dicom_tls_port=tls_port, dicom_tls_only=True),
            accept_unknown_calling_ae=False,
            modalities={
                "pacs": {
                    "ae_title": orthanc.aet,
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                    "tls": True,
                }
            },
        )
        # Orthanc -> node: a C-STORE over TLS, Orthanc presenting its certificate.
        study = orthanc.upload([_one_slice(chest_ct_dir)])
        orthanc.push("medvision", study)
        assert _stored(scp) == 1
        (accepted,) = _events(scp, "association.accepted")
        assert accepted["calling_aet"] == "ORTHANC" and accepted["tls"] is True

        # node -> Orthanc: results over TLS to its DICOM port (TLS only once enabled).
        pacs = scp.settings.modalities["pacs"]
        pending = PendingResults(
            tmp_path / "sender", shared_data, pacs, SR_STUDY,
            dicom_tls_cert=certs.node.cert, dicom_tls_key=certs.node.key,
            dicom_tls_ca=certs.ca,
        )  # fmt: skip
        assert pending.sender.send_due() == 2, [r.last_error for r in pending.rows()]
        for row in pending.rows():
            found = orthanc.post("/tools/find", {"Level": "Instance", "Query": {
                "SOPInstanceUID": row.sop_instance_uid}})  # fmt: skip
            assert len(found) == 1
        pending.close()
    finally:
        orthanc.stop()


def test_orthanc_with_an_untrusted_certificate_is_refused(
    start_scp: Callable[..., Any], tmp_path: Path, certs: Certs, chest_ct_dir: Path
) -> None:
    tls_port = free_port()
    orthanc = Orthanc(
        tmp_path / "orthanc",
        {"medvision": ("MEDVISION", tls_port, {"UseDicomTls": True})},
        config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(certs.rogue.cert),
            "DicomTlsPrivateKey": str(certs.rogue.key),
            "DicomTlsTrustedCertificates": str(certs.ca),
        },
    ).start()
    try:
        scp = start_scp(**_tls_settings(certs, dicom_tls_port=tls_port))
        study = orthanc.upload([_one_slice(chest_ct_dir)])
        with pytest.raises(Exception):  # noqa: B017, PT011 - Orthanc answers HTTP 500
            orthanc.push("medvision", study)
        (event,) = wait_for("the audit event", lambda: _events(scp, "association.rejected"), 10)
        assert "certificate is not trusted" in event["reason"]
        assert _stored(scp) == 0
    finally:
        orthanc.stop()
