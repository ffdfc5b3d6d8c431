"""C-STORE into the durable spool: answer Success only once the instance is durable.

The instance is spooled as received (no re-encoding): its record flushed into the spool
journal (one fdatasync for a group of records), or for a large instance the file itself
written and synced (``_spool``); the index follows in batches (``_ingest``). An unwritable
or full spool answers Out of Resources and a bad instance Cannot Understand (``_scp_status``):
undecodable, a UID that is not a whole UI value, or a SOP Instance UID the node already holds
in another study or series (:meth:`StoreHandler._conflict`). What each association stored
and had refused is counted for its audit events (``_scp_associations``).
"""

from __future__ import annotations

import logging
from io import BytesIO

from pydicom import Dataset, dcmread
from pydicom.tag import Tag
from pynetdicom import evt

from medvision.audit import DbAuditLog
from medvision.node._dataset_bytes import file_meta_bytes, header_uids
from medvision.node._ingest import Indexer, Received
from medvision.node._scp_associations import Associations, AssocStats, shown
from medvision.node._scp_status import (
    CANNOT_UNDERSTAND,
    SUCCESS,
    conflict_status,
    store_failure_status,
)
from medvision.node._spool import Spool
from medvision.node._spool_errors import InvalidUID, SpoolError

LOG = logging.getLogger("medvision.scp")

_STUDY_UID = Tag(0x0020, 0x000D)
_SERIES_UID = Tag(0x0020, 0x000E)
_SOP_UID = Tag(0x0008, 0x0018)


class StoreHandler:
    """The C-STORE handler of one :class:`~medvision.node.StorageSCP`."""

    def __init__(
        self, spool: Spool, indexer: Indexer, audit: DbAuditLog, associations: Associations
    ) -> None:
        self.spool = spool
        self.indexer = indexer
        self.audit = audit
        self.associations = associations

    def on_store(self, event: evt.Event) -> int | Dataset:
        """Spool the instance as received (no re-encoding) and answer only once it is durable.

        Only the three UIDs the spool needs are parsed from the received bytes; the whole
        dataset is never decoded here. Indexing in the database happens afterwards, in
        batches, on the :class:`~medvision.node._ingest.Indexer` thread.
        """
        assoc = event.assoc
        stats = self.associations.stats_of(assoc)
        try:
            calling = assoc.requestor.ae_title.strip()
            sop_class = str(event.request.AffectedSOPClassUID or "")
            sop_instance = str(event.request.AffectedSOPInstanceUID or "")
            syntax = str(event.context.transfer_syntax)
            dataset = event.encoded_dataset(False)
            # The file meta records who sent it, so that a re-index after a crash still
            # knows where the results go by default.
            data = b"".join(
                (
                    b"\x00" * 128,
                    b"DICM",
                    file_meta_bytes(sop_class, sop_instance, syntax, calling),
                    dataset,
                )
            )
            uids = header_uids(dataset, syntax)
            if uids is None:  # deflated, big endian, or not what we can walk: pydicom
                header = dcmread(
                    BytesIO(data),
                    stop_before_pixels=True,
                    specific_tags=[_STUDY_UID, _SERIES_UID, _SOP_UID],
                )
                uids = {
                    "study": str(header.get("StudyInstanceUID", "")),
                    "series": str(header.get("SeriesInstanceUID", "")),
                    "sop": str(header.get("SOPInstanceUID", "")),
                }
            item = Received(
                study_instance_uid=uids.get("study", ""),
                series_instance_uid=uids.get("series", ""),
                sop_instance_uid=sop_instance,
                sop_class_uid=sop_class,
                calling_aet=calling,
                calling_host=assoc.requestor.address,
            )
            if uids.get("sop", "") != item.sop_instance_uid:
                raise InvalidUID("SOP Instance UID in the dataset differs from the request's")
            # Whole-string UI checks before anything else: a UID names a spool folder.
            self.spool.relpath_for(
                item.study_instance_uid, item.series_instance_uid, item.sop_instance_uid
            )
        except InvalidUID as err:
            return self._refuse(event, stats, CANNOT_UNDERSTAND, str(err))
        except Exception as err:  # undecodable dataset from the peer
            return self._refuse(event, stats, CANNOT_UNDERSTAND, f"cannot decode dataset: {err}")
        held = self.indexer.claim(item)  # never raises: without a database it cannot check
        if held is not None:
            return self._conflict(event, stats, item, held)
        try:
            stored = self.spool.store(
                data, item.study_instance_uid, item.series_instance_uid, item.sop_instance_uid
            )
        except SpoolError as err:
            self.indexer.release(item)
            return self._refuse(event, stats, store_failure_status(err), str(err))
        # Durable now: the index follows (and is rebuilt from the spool after a crash).
        self.indexer.put(item, stored)
        if stats is not None:
            if stored.created:
                stats.received[item.study_instance_uid] += 1
                stats.received_bytes += stored.size
            else:
                stats.duplicates += 1
        return SUCCESS

    def _refuse(self, event: evt.Event, stats: AssocStats | None, status: int, reason: str) -> int:
        """Log a refused C-STORE with what an operator needs to find it at the sender: the
        SOP Instance UID and the calling AE and address (UIDs and AE titles are not PHI;
        the dataset's patient attributes are never read here). Counted for the
        association's ``instances.refused`` audit event."""
        LOG.warning(
            "C-STORE refused (0x%04X): SOP Instance UID %s from %s at %s: %s",
            status,
            shown(str(event.request.AffectedSOPInstanceUID or "")),
            shown(event.assoc.requestor.ae_title.strip()),
            event.assoc.requestor.address,
            reason,
        )
        if stats is not None:
            stats.failures += 1
        return status

    def _conflict(
        self,
        event: evt.Event,
        stats: AssocStats | None,
        item: Received,
        held: tuple[str, str],
    ) -> Dataset:
        """Refuse an instance whose SOP Instance UID the node already holds elsewhere.

        A SOP Instance UID names one instance (PS3.5 9): one arriving in another study or
        series is either a different instance under a reused UID or the same instance
        with contradicting study data. Storing it would leave a file the index (one row per
        UID) cannot hold; replacing the first would change a study that may already have
        results. So it is refused with Error: Cannot understand (PS3.4 B.2.3, Cxxx): the
        node cannot make sense of the dataset it was given. Not Out of Resources (A7xx), which
        tells the sender to retry, and not A9xx, since the dataset does match its SOP
        class. The response carries the related fields Cxxx allows: Offending Element
        (0008,0018) and an Error Comment. Audited at once as ``instances.refused`` with
        both places, so QA can follow it up with the sending PACS.
        """
        reason = (
            f"SOP Instance UID is already held in study {held[0]}, series {held[1]}"
            if held[0] != item.study_instance_uid
            else f"SOP Instance UID is already held in series {held[1]} of this study"
        )
        self._refuse(event, None, CANNOT_UNDERSTAND, reason)
        self.associations.count_refused()
        try:
            self._audit_conflict(item, held)
        except Exception as err:  # the answer is the same; the log line above stays
            LOG.error("cannot audit the refused instance %s: %s", item.sop_instance_uid, err)
        return conflict_status(offending=_SOP_UID)

    def _audit_conflict(self, item: Received, held: tuple[str, str]) -> None:
        self.audit.record(
            "instances.refused",
            outcome="failure",
            study_instance_uid=item.study_instance_uid,
            series_instance_uid=item.series_instance_uid,
            sop_instance_uid=item.sop_instance_uid,
            held_in_study_instance_uid=held[0],
            held_in_series_instance_uid=held[1],
            calling_aet=item.calling_aet,
            calling_host=item.calling_host,
            instances=1,
            reason="SOP Instance UID already held in another study or series",
        )


__all__ = ["StoreHandler"]
