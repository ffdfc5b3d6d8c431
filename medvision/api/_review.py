"""A reviewer's rejection, carried into DICOM: a new SR version that marks the finding.

When ``resend_sr_on_reject`` is on, rejecting finding *n* of a job writes a new version of
the job's TID 1500 SR and queues it for the study's destinations, so the PACS holds the
reviewer's word next to the algorithm's. What changes, and why:

- the finding's measurement group (the one whose Referenced Segment is *n*) is kept, with
  its measurements, and gains a qualitative evaluation ``Reviewer assessment = Rejected by
  reviewer``. Dropping the group would hide what the algorithm claimed, and the audit
  trail and the SR would then tell different stories. DICOM has no standard code for "a
  human rejected this AI finding" yet, so the concept is in the local coding scheme
  ``99MEDVISION`` (private schemes begin with 99, PS3.16 8.2), declared in the Coding
  Scheme Identification Sequence;
- a new SOP Instance UID in the same SR series, the next Instance Number and a new
  Content Date/Time; the Predecessor Documents Sequence points at the version it
  replaces, which is how SR says "this supersedes that" (PS3.3 C.17.2);
- the Verification Flag stays UNVERIFIED: a rejection is not a signed report;
- the reviewer's comment is not copied into the SR (free text may carry PHI).

Versions accumulate (``sr-2.dcm``, ``sr-3.dcm``, ...), each built on the latest, and an
undelivered older SR of the same job is marked superseded in the outbox.

The planar SR (``sr-planar.dcm``, the lesions' axes for OHIF) is versioned the same way
(``sr-planar-2.dcm``, ...) when the job wrote one and the finding is drawn in it: otherwise
a viewer showing the axes would go on showing the rejected lesion as the algorithm's
unchallenged word. Its group is found by the finding's Tracking UID (the same UID in both
documents, STANDARDS SR-06), gains the same evaluation, and its Comment (the label OHIF
shows) says "rejected by reviewer". It goes only to the destinations that take planar SRs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import highdicom as hd
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence as DicomSequence
from sqlalchemy import select
from sqlalchemy.orm import Session

from medvision.config import Modality, Settings
from medvision.db import Database, Job, Outbox, OutboxState, Study
from medvision.jobs import destinations_for
from medvision.lifecycle import transition_outbox
from medvision.results import save_dicom

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SCHEME = "99MEDVISION"
REVIEW = hd.sr.CodedConcept("REVIEW", SCHEME, "Reviewer assessment")
REJECTED = hd.sr.CodedConcept("REJECTED", SCHEME, "Rejected by reviewer")
#: Referenced Segment (TID 1411 row 11) and Referenced Segmentation Frame (TID 1410).
_REFERENCED_SEGMENT = {"121191", "121214"}
#: Tracking Unique Identifier (TID 1501/1411 row 3).
_TRACKING_UID = "112040"
#: Comment (DCM 121106): the item OHIF reads a planar measurement's label from.
_COMMENT = "121106"
PLANAR_NAME = "sr-planar"


class ReviewError(ValueError):
    """The SR cannot be re-issued (no results, no such finding in the SR)."""


def sr_versions(result_dir: Path) -> list[Path]:
    """The job's SR files, oldest first: sr.dcm, then sr-2.dcm, sr-3.dcm, ..."""
    extra = sorted(
        (p for p in result_dir.glob("sr-*.dcm") if p.stem[3:].isdigit()),
        key=lambda p: int(p.stem[3:]),
    )
    first = result_dir / "sr.dcm"
    return ([first] if first.exists() else []) + extra


def planar_versions(result_dir: Path) -> list[Path]:
    """The job's planar SR files, oldest first: sr-planar.dcm, then sr-planar-2.dcm, ..."""
    prefix = f"{PLANAR_NAME}-"
    extra = sorted(
        (p for p in result_dir.glob(f"{prefix}*.dcm") if p.stem[len(prefix) :].isdigit()),
        key=lambda p: int(p.stem[len(prefix) :]),
    )
    first = result_dir / f"{PLANAR_NAME}.dcm"
    return ([first] if first.exists() else []) + extra


def _groups(item: Dataset):  # noqa: ANN202 - generator of Datasets
    for child in item.get("ContentSequence", []):
        if child.ValueType == "CONTAINER":
            yield child
            yield from _groups(child)


def _segment_number(group: Dataset) -> int | None:
    for child in group.get("ContentSequence", []):
        name = child.ConceptNameCodeSequence[0].CodeValue
        if child.ValueType == "IMAGE" and name in _REFERENCED_SEGMENT:
            ref = child.ReferencedSOPSequence[0]
            return int(ref.ReferencedSegmentNumber) if "ReferencedSegmentNumber" in ref else None
    return None


def _tracking_uid(group: Dataset) -> str | None:
    for child in group.get("ContentSequence", []):
        if child.ValueType == "UIDREF" and (
            child.ConceptNameCodeSequence[0].CodeValue == _TRACKING_UID
        ):
            return str(child.UID)
    return None


def tracking_uid_of(sr: Dataset, finding_number: int) -> str | None:
    """The Tracking UID of finding ``finding_number``'s group in the volumetric SR ``sr``."""
    group = next((g for g in _groups(sr) if _segment_number(g) == finding_number), None)
    return _tracking_uid(group) if group is not None else None


def _is_rejected(group: Dataset) -> bool:
    return any(
        c.ValueType == "CODE"
        and c.ConceptNameCodeSequence[0].CodeValue == REVIEW.value
        and c.ConceptNameCodeSequence[0].CodingSchemeDesignator == SCHEME
        for c in group.get("ContentSequence", [])
    )


def mark_rejected(previous: Dataset, finding_number: int, now: datetime) -> Dataset | None:
    """A new SR version of ``previous`` with finding ``finding_number`` marked rejected;
    None when that finding is already marked in ``previous``."""
    sr = copy.deepcopy(previous)
    group = next((g for g in _groups(sr) if _segment_number(g) == finding_number), None)
    if group is None:
        raise ReviewError(f"The SR has no measurement group for finding {finding_number}.")
    if _is_rejected(group):
        return None
    _add_rejection(group)
    return _next_version(sr, previous, now)


def mark_rejected_planar(previous: Dataset, tracking_uid: str, now: datetime) -> Dataset | None:
    """A new planar SR version of ``previous`` with the group of ``tracking_uid`` marked
    rejected and its label saying so; None when no group draws it (an organ, a lesion
    without axes) or it is already marked."""
    sr = copy.deepcopy(previous)
    group = next((g for g in _groups(sr) if _tracking_uid(g) == tracking_uid), None)
    if group is None or _is_rejected(group):
        return None
    _add_rejection(group)
    for child in group.get("ContentSequence", []):
        if child.ValueType == "TEXT" and child.ConceptNameCodeSequence[0].CodeValue == _COMMENT:
            child.TextValue = f"{child.TextValue} (rejected by reviewer)"[:1024]
    return _next_version(sr, previous, now)


def _add_rejection(group: Dataset) -> None:
    group.ContentSequence.append(
        hd.sr.CodeContentItem(
            name=REVIEW, value=REJECTED, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
    )


def _next_version(sr: Dataset, previous: Dataset, now: datetime) -> Dataset:
    """Stamp ``sr`` (a modified copy of ``previous``) as the version that supersedes it."""
    predecessor = Dataset()
    predecessor.StudyInstanceUID = previous.StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = previous.SeriesInstanceUID
    ref = Dataset()
    ref.ReferencedSOPClassUID = previous.SOPClassUID
    ref.ReferencedSOPInstanceUID = previous.SOPInstanceUID
    series.ReferencedSOPSequence = DicomSequence([ref])
    predecessor.ReferencedSeriesSequence = DicomSequence([series])
    sr.PredecessorDocumentsSequence = DicomSequence(
        [*previous.get("PredecessorDocumentsSequence", []), predecessor]
    )
    schemes = list(sr.get("CodingSchemeIdentificationSequence", []))
    if not any(s.CodingSchemeDesignator == SCHEME for s in schemes):
        scheme = Dataset()
        scheme.CodingSchemeDesignator = SCHEME
        scheme.CodingSchemeName = "medvision local codes"
        scheme.CodingSchemeResponsibleOrganization = "medvision project"
        schemes.append(scheme)
        sr.CodingSchemeIdentificationSequence = DicomSequence(schemes)
    uid = hd.UID()
    sr.SOPInstanceUID = uid
    sr.file_meta.MediaStorageSOPInstanceUID = uid
    sr.InstanceNumber = int(previous.get("InstanceNumber", 1) or 1) + 1
    sr.ContentDate = sr.InstanceCreationDate = now.strftime("%Y%m%d")
    sr.ContentTime = sr.InstanceCreationTime = now.strftime("%H%M%S")
    return sr


@dataclass(frozen=True)
class Reissued:
    """The SOP Instance UIDs a rejection wrote: the SR's new version, and the planar SR's
    when the job wrote one that draws the finding."""

    sr_uid: str
    planar_sr_uid: str | None = None


def resend_rejected_sr(
    db: Database, settings: Settings, job_id: int, finding_number: int, now: datetime
) -> Reissued | None:
    """Write the next SR version of ``job_id`` with the finding rejected (and of its planar
    SR, where it draws the finding) and queue them.

    Returns the new SOP Instance UIDs, or None when the latest SR already marks it.
    """
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or not job.result_dir:
            raise ReviewError(f"Job {job_id} has no results.")
        study = session.scalar(
            select(Study).where(Study.study_instance_uid == job.study_instance_uid)
        )
        result_dir, calling_aet = Path(job.result_dir), study.calling_aet if study else ""
    versions = sr_versions(result_dir)
    if not versions:
        raise ReviewError(f"Job {job_id} wrote no SR.")
    latest = dcmread(versions[-1])
    new = mark_rejected(latest, finding_number, now)
    if new is None:
        return None
    path = result_dir / f"sr-{len(versions) + 1}.dcm"
    save_dicom(new, path)
    planar_path: Path | None = None
    planars = planar_versions(result_dir)
    tracking_uid = tracking_uid_of(latest, finding_number)
    planar = None
    if planars and tracking_uid:
        planar = mark_rejected_planar(dcmread(planars[-1]), tracking_uid, now)
    if planar is not None:
        planar_path = result_dir / f"{PLANAR_NAME}-{len(planars) + 1}.dcm"
        save_dicom(planar, planar_path)
    destinations = destinations_for(settings, calling_aet)
    with db.session() as session:
        _queue(session, job_id, new, path, versions, destinations)
        if planar is not None and planar_path is not None:
            wanted = [(n, m) for n, m in destinations if m.planar_sr]
            _queue(session, job_id, planar, planar_path, planars, wanted)
    return Reissued(
        str(new.SOPInstanceUID), str(planar.SOPInstanceUID) if planar is not None else None
    )


def _queue(
    session: Session,
    job_id: int,
    new: Dataset,
    path: Path,
    older: list[Path],
    destinations: list[tuple[str, Modality]],
) -> None:
    """Supersede the undelivered ``older`` versions of one document and queue ``new``.
    The study's state is left as it is: the sender derives it again as it delivers."""
    transition_outbox(
        session,
        [
            Outbox.job_id == job_id,
            Outbox.sop_class_uid == SR_CLASS,
            # this document's earlier versions only (both SRs have the same SOP class)
            Outbox.path.in_({str(p) for v in older for p in (v, v.resolve())}),
        ],
        OutboxState.SUPERSEDED,
        narrow=[OutboxState.PENDING],
        refresh=False,
    )
    for name, modality in destinations:
        session.add(
            Outbox(
                job_id=job_id,
                study_instance_uid=str(new.StudyInstanceUID),
                destination=name,
                ae_title=modality.ae_title,
                host=modality.host,
                port=modality.port,
                path=str(path.resolve()),
                sop_instance_uid=str(new.SOPInstanceUID),
                sop_class_uid=SR_CLASS,
            )
        )


__all__ = [
    "REJECTED",
    "REVIEW",
    "Reissued",
    "ReviewError",
    "mark_rejected",
    "mark_rejected_planar",
    "planar_versions",
    "resend_rejected_sr",
    "sr_versions",
    "tracking_uid_of",
]
