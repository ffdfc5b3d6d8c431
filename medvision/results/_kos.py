"""A Key Object Selection document that flags the overlay images in the study.

Why: a reader opening the study in a PACS should find the overlays without scrolling
through every series; most PACS list key objects (KOS, "key images") prominently. The KOS
points at the overlay instances (and, if asked, at the source slices they were made from),
belongs to the source study, and names the algorithm as a Device observer.

Title: (113000, DCM, "Of Interest") from CID 7010. The CID has no concept for "machine
result awaiting review"; the other candidates ("For Referring Provider", "For Physician
Review", "Best In Set") each claim a human choice or an RT workflow step, which an
unverified algorithm output is not. The Key Object Description says what the images are and
that nobody has verified them (AIR-05).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code as PydicomCode

from medvision.errors import ResultError
from medvision.findings import Findings
from medvision.results._codes import generated_by, truncate
from medvision.results._device import DeviceInfo, algorithm_device_uid, algorithm_equipment
from medvision.results._inherit import no_phi_warnings, sanitize_headers
from medvision.results._overlay import overlay_slice_index

logger = logging.getLogger(__name__)

DEFAULT_KOS_SERIES_NUMBER = 904
#: CID 7010 Key Object Selection Document Title.
OF_INTEREST = PydicomCode("113000", "DCM", "Of Interest")


def _device_observer(findings: Findings) -> hd.sr.ObserverContext:
    algorithm = findings.algorithm
    return hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm_device_uid(algorithm),
            name=truncate(f"{algorithm.name} {algorithm.version}", 64),
            manufacturer_name=truncate(algorithm.manufacturer, 64),
            model_name=truncate(algorithm.name, 64),
        ),
    )


def _source_slices(findings: Findings, overlays: Sequence[Dataset]) -> list[Dataset]:
    """The cleaned source headers the overlays were made from, once each, in order."""
    cleaned, _ = sanitize_headers(findings.volume.source_headers)
    by_uid = {str(h.SOPInstanceUID): h for h in cleaned}
    uids = dict.fromkeys(
        findings.volume.sop_instance_uids[overlay_slice_index(findings, o)] for o in overlays
    )
    return [by_uid[uid] for uid in uids]


@no_phi_warnings()
def build_kos(
    findings: Findings,
    overlays: Sequence[Dataset],
    *,
    include_source: bool = False,
    series_number: int = DEFAULT_KOS_SERIES_NUMBER,
    device: DeviceInfo | None = None,
) -> hd.ko.KeyObjectSelectionDocument:
    """A KOS in the source study referencing ``overlays`` (and the source slices if asked).

    Raises :class:`ResultError` when there are no overlays or one belongs to another study.
    """
    device = device or DeviceInfo()
    if not overlays:
        raise ResultError("No overlay images to reference: a KOS needs at least one object.")
    study = findings.volume.study_instance_uid
    if any(str(o.StudyInstanceUID) != study for o in overlays):
        raise ResultError("An overlay belongs to another study than the findings' source.")
    referenced = list(overlays)
    if include_source:
        referenced += _source_slices(findings, overlays)
    algorithm = findings.algorithm
    note = generated_by(algorithm)
    try:
        content = hd.ko.KeyObjectSelection(
            document_title=OF_INTEREST,
            referenced_objects=referenced,
            observer_device_context=_device_observer(findings),
            description=truncate(
                f"Overlay images of {algorithm.name} {algorithm.version} findings "
                f"({len(overlays)} slice(s)); {note}.",
                1024,
            ),
        )
        kos = hd.ko.KeyObjectSelectionDocument(
            evidence=referenced,
            content=content,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=device.manufacturer,
            institution_name=device.institution_name,
            contributing_equipment=[algorithm_equipment(algorithm)],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultError(f"Could not build the KOS: {reason}") from exc
    kos.SeriesDescription = truncate(f"{algorithm.name} key images ({note})", 64)
    logger.info("Built KOS referencing %d object(s)", len(referenced))
    return kos


__all__ = ["DEFAULT_KOS_SERIES_NUMBER", "OF_INTEREST", "build_kos"]
