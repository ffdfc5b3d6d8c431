"""Delivers results from the persistent outbox by C-STORE or STOW-RS, with backoff.

A destination whose modality has a ``stow_url`` gets its results by STOW-RS (one HTTP POST
of ``multipart/related; type="application/dicom"`` per instance, so that each outbox row
has its own answer); every other destination by C-STORE.

Rows stay in the outbox until the destination answers Success; an unreachable PACS leaves
them pending (and the study visibly ``send-failed``), and they go when it returns. A row is
marked sent in the same transaction that records the success, so a result is sent again only
if the node dies between the PACS's answer and that commit (the PACS then receives the same
SOP Instance UID again, which it stores once).

A destination marked ``deidentify`` (research, model training: anything but the source
PACS) gets each result de-identified on the way out (:mod:`medvision.deid`, PS3.15 Annex E
with keyed pseudonyms and UIDs); the file in the results folder stays as it is, so the
source PACS still gets the original.

A destination marked ``tls`` gets its C-STOREs over DICOM TLS (``_tls``: BCP 195 profile, our
certificate presented, the PACS's checked against the destination's trust store); a failed
handshake says why in the outbox row and the ``results.send_failed`` event.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import timedelta
from io import BytesIO
from itertools import groupby
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from sqlalchemy import select, update

from medvision.audit import DbAuditLog
from medvision.config import ConfigError, Settings
from medvision.db import Database, Outbox, OutboxState, as_utc, log_pass_failure, utcnow
from medvision.deid import Deidentifier
from medvision.lifecycle import lock_study, transition_outbox
from medvision.node._net import set_nodelay
from medvision.node._tls import client_context, describe

LOG = logging.getLogger("medvision.sender")

#: Several receivers on one database: how long a row another receiver's sender claimed is
#: left to it (it sends, or records the failure, well within this); after that the row is
#: due again, so a receiver that died while sending delays it by this much.
SEND_LEASE_S = 300.0


class Sender:
    def __init__(self, settings: Settings, db: Database, audit: DbAuditLog) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deid: Deidentifier | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="medvision-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_due()
            except Exception as err:
                log_pass_failure(LOG, "sender", err)
            self._stop.wait(self.settings.poll_interval_s)

    def send_due(self) -> int:
        """Send every due outbox row once; returns how many were delivered."""
        now = utcnow()
        with self.db.session() as session:
            rows = [
                r
                for r in session.scalars(
                    select(Outbox)
                    .where(Outbox.state == OutboxState.PENDING)
                    .order_by(Outbox.ae_title, Outbox.host, Outbox.port, Outbox.id)
                )
                if as_utc(r.next_attempt_at) <= now
            ]
        sent = 0
        stow = sorted(
            (r for r in rows if self._stow_url(r)), key=lambda r: (self._stow_url(r), r.id)
        )
        for url, group in groupby(stow, key=self._stow_url):
            if claimed := self._claim(list(group)):
                sent += self._send_stow(url, claimed)
        dimse = [r for r in rows if not self._stow_url(r)]
        for (aet, host, port), group in groupby(dimse, key=lambda r: (r.ae_title, r.host, r.port)):
            if claimed := self._claim(list(group)):
                sent += self._send_group(aet, host, port, claimed)
        return sent

    def _claim(self, rows: list[Outbox]) -> list[Outbox]:
        """The rows this sender may send now.

        The only receiver of its database sends every due row. One of several
        (``node_name``) first moves each row's ``next_attempt_at`` on by
        :data:`SEND_LEASE_S`, on condition that it is still pending and due as read: one
        conditional update, so of two senders that read the same row only one gets it.
        Each row in a transaction of its own: one holding several outbox rows could wait
        for a row that a worker or another sender holds, under its study's lock, while that
        one waits for a row it holds (the lock order is study, then outbox rows).
        """
        if not self.settings.node_name:
            return rows
        lease = utcnow() + timedelta(seconds=SEND_LEASE_S)
        mine: list[Outbox] = []
        for row in rows:
            with self.db.session() as session:
                taken = session.execute(
                    update(Outbox)
                    .where(
                        Outbox.id == row.id,
                        Outbox.state == OutboxState.PENDING,
                        Outbox.next_attempt_at == row.next_attempt_at,
                    )
                    .values(next_attempt_at=lease)
                ).rowcount
                if taken == 1:
                    mine.append(row)
        return mine

    def _stow_url(self, row: Outbox) -> str:
        """The destination's STOW-RS URL, or "" for C-STORE (also if it left the settings)."""
        modality = self.settings.modalities.get(row.destination)
        return modality.stow_url if modality is not None else ""

    def _deidentifies(self, row: Outbox) -> bool:
        modality = self.settings.modalities.get(row.destination)
        return modality is not None and modality.deidentify

    def _outgoing(self, row: Outbox) -> Dataset:
        """The dataset to send for ``row``: the result file, de-identified where the
        destination is marked ``deidentify`` (a missing secret fails the row, never
        sends the original)."""
        ds = dcmread(row.path)
        if self._deidentifies(row):
            if self._deid is None:
                self._deid = Deidentifier.from_settings(self.settings)
            self._deid.dataset(ds)
        return ds

    def _send_started(self, rows: list[Outbox], **where: object) -> None:
        # Per study and SOP class, for the DICOM audit message (PS3.15 A.5.3.3 Study object).
        counts = Counter((r.study_instance_uid, r.sop_class_uid) for r in rows)
        self.audit.record(
            "results.send_started",
            **where,
            instances=[r.sop_instance_uid for r in rows],
            studies=[
                {
                    "study_instance_uid": study,
                    "sop_classes": [
                        {"sop_class_uid": cls, "instances": n}
                        for (s, cls), n in sorted(counts.items())
                        if s == study
                    ],
                }
                for study in sorted({s for s, _ in counts})
            ],
        )

    def _send_stow(self, url: str, rows: list[Outbox]) -> int:
        """STOW-RS each row to ``url``; a row is sent when the answer lists its instance."""
        self._send_started(rows, destination=rows[0].ae_title, host=url, port=0, url=url)
        sent = 0
        for i, row in enumerate(rows):
            try:
                if self._deidentifies(row):
                    ds = self._outgoing(row)
                    data, uid = _encode(ds), str(ds.SOPInstanceUID)
                else:  # the stored bytes as they are
                    data, uid = Path(row.path).read_bytes(), row.sop_instance_uid
                ok, reason = _stow_one(url, data, uid)
            except urllib.error.HTTPError as err:
                detail = err.read(500).decode(errors="replace").strip()
                ok, reason = False, f"STOW-RS to {url} answered HTTP {err.code}: {detail}"
            except ConfigError as err:
                self._failed(row, str(err))
                continue
            except (OSError, ValueError) as err:  # unreachable: so is every row after it
                for rest in rows[i:]:
                    self._failed(rest, f"STOW-RS to {url} failed: {err}")
                return sent
            if ok:
                self._sent(row)
                sent += 1
            else:
                self._failed(row, reason)
        return sent

    def _send_group(self, aet: str, host: str, port: int, rows: list[Outbox]) -> int:
        ae = AE(ae_title=self.settings.ae_title)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 30
        for cls in sorted({r.sop_class_uid for r in rows}):
            ae.add_requested_context(cls, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        modality = self.settings.modalities.get(rows[0].destination)
        tls: ssl.SSLContext | None = None
        if modality is not None and modality.tls:
            try:
                tls = client_context(self.settings, rows[0].destination, modality)
            except ConfigError as err:
                for row in rows:
                    self._failed(row, str(err))
                return 0
            tls.sslsocket_class = _RecordingSSLSocket
        self._send_started(rows, destination=aet, host=host, port=port, tls=tls is not None)
        assoc = ae.associate(
            host,
            port,
            ae_title=aet,
            evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],
            tls_args=(tls, host) if tls is not None else None,
        )
        if not assoc.is_established:
            why = f"cannot associate with {aet}@{host}:{port}"
            failed = getattr(tls, "tls_error", None)
            if failed is not None:
                why = f"{why}: DICOM TLS handshake failed: {describe(failed)}"
            elif tls is not None:
                why = f"{why} over DICOM TLS"
            for row in rows:
                self._failed(row, why)
            return 0
        sent = 0
        try:
            for row in rows:
                try:
                    status = assoc.send_c_store(self._outgoing(row))
                    code = int(getattr(status, "Status", 0xFFFF))
                except Exception as err:
                    self._failed(row, f"C-STORE to {aet} failed: {err}")
                    if not assoc.is_established:
                        break
                    continue
                if code in (0x0000, 0xB000, 0xB007, 0xB006):
                    self._sent(row)
                    sent += 1
                else:
                    self._failed(row, f"{aet} answered C-STORE status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()
        return sent

    def _sent(self, row: Outbox) -> None:
        with self.db.session() as session:
            # The study's state follows (derived under its row lock, taken first).
            transition_outbox(
                session,
                row,
                OutboxState.SENT,
                sent_at=utcnow(),
                attempts=Outbox.attempts + 1,
                last_error="",
            )
        self.audit.record(
            "results.sent",
            study_instance_uid=row.study_instance_uid,
            destination=row.destination,
            ae_title=row.ae_title,
            host=row.host,
            sop_instance_uid=row.sop_instance_uid,
            sop_class_uid=row.sop_class_uid,
            deidentified=self._deidentifies(row),
        )

    def _failed(self, row: Outbox, reason: str) -> None:
        s = self.settings
        with self.db.session() as session:
            # The lock order (medvision.lifecycle): the study row, then the outbox row,
            # read afresh under it.
            lock_study(session, row.study_instance_uid)
            r = session.get(Outbox, row.id, populate_existing=True)
            assert r is not None
            attempts = r.attempts + 1
            delay = min(s.retry_initial_s * 2 ** (attempts - 1), s.retry_max_s)
            gives_up = bool(s.max_send_attempts) and attempts >= s.max_send_attempts
            # Pending again (retried after the delay) or failed for good; a row that is no
            # longer pending (superseded meanwhile) is left as it is.
            transition_outbox(
                session,
                r,
                OutboxState.FAILED if gives_up else OutboxState.PENDING,
                narrow=[OutboxState.PENDING],
                attempts=attempts,
                last_error=reason,
                next_attempt_at=utcnow() + timedelta(seconds=delay),
            )
        LOG.warning("send failed (attempt %d): %s", attempts, reason)
        self.audit.record(
            "results.send_failed",
            outcome="failure",
            study_instance_uid=row.study_instance_uid,
            destination=row.destination,
            ae_title=row.ae_title,
            host=row.host,
            sop_instance_uid=row.sop_instance_uid,
            sop_class_uid=row.sop_class_uid,
            attempt=attempts,
            reason=reason,
        )


class _RecordingSSLSocket(ssl.SSLSocket):
    """Keeps the first TLS error on its context (``tls_error``): pynetdicom logs it and
    reports only "not established", while the outbox should say what to fix. With TLS 1.3
    a PACS refuses our certificate after our side of the handshake is done, so its alert
    arrives on the first read."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except Exception as err:
            self._record(err)
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as err:
            self._record(err)
            raise

    def _record(self, err: Exception) -> None:
        if getattr(self.context, "tls_error", None) is None:
            self.context.tls_error = err  # type: ignore[attr-defined]


def _encode(ds: Dataset) -> bytes:
    """``ds`` as a DICOM file (Part 10), as STOW-RS wants it."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _stow_one(url: str, data: bytes, sop_instance_uid: str) -> tuple[bool, str]:
    """POST one instance (PS3.18 10.5); (stored?, reason when not).

    HTTP 200 with the instance in the Referenced SOP Sequence (0008,1199) is success; 202
    is success only if the instance is referenced and not in the Failed SOP Sequence
    (0008,1198). A 4xx/5xx raises :class:`urllib.error.HTTPError`.
    """
    boundary = uuid.uuid4().hex
    body = b"".join(
        (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - configured URL
        status = response.status
        text = response.read().decode(errors="replace")
    answer = json.loads(text) if text.strip() else {}
    if isinstance(answer, list):  # some servers wrap the dataset in a list
        answer = answer[0] if answer else {}

    def uids(tag: str) -> set[str]:
        items = (answer.get(tag) or {}).get("Value") or []
        return {str(v) for item in items for v in ((item.get("00081155") or {}).get("Value") or [])}

    if sop_instance_uid in uids("00081198"):
        return False, f"STOW-RS to {url}: the instance is in the Failed SOP Sequence"
    if status in (200, 202) and sop_instance_uid in uids("00081199"):
        return True, ""
    if status == 200 and not answer:  # stored, and the server says nothing more
        return True, ""
    return False, f"STOW-RS to {url} answered HTTP {status} without referencing the instance"


__all__ = ["Sender"]
