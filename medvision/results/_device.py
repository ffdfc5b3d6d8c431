"""Who wrote a result: the node (equipment) and the algorithm (a contributing device).

The SEG's Enhanced General Equipment module names the product that wrote the file
(medvision, its version, the node's serial number): STANDARDS SEG-09. The model that made the
findings is a different thing and is named three more times: SEG Algorithm Identification,
SR TID 4019, and one Contributing Equipment item (AIR-01) whose DeviceUID changes whenever
the weights change, so a PACS can tell two model versions apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from pydicom.uid import generate_uid

import medvision
from medvision.findings import AlgorithmInfo
from medvision.results._codes import PROCESSING_EQUIPMENT, truncate

#: UID root for identifiers we derive deterministically (pydicom's documented root).
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True)
class DeviceInfo:
    """The equipment that writes SEG and SR files (Enhanced General Equipment, Type 1)."""

    manufacturer: str = "medvision"
    model_name: str = "medvision"
    #: A node should configure its own; the default marks an unconfigured installation.
    serial_number: str = "UNCONFIGURED"
    software_version: str = medvision.__version__
    institution_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("manufacturer", "model_name", "serial_number", "software_version"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"DeviceInfo.{name} must not be empty (Type 1 in DICOM).")


def algorithm_device_uid(algorithm: AlgorithmInfo) -> str:
    """A UID that is the same for one algorithm name + version + weights, and only for it.

    Used as the SR Device Observer UID (SR-03) and the Contributing Equipment DeviceUID
    (AIR-01): two different weights give two different UIDs.
    """
    return generate_uid(
        prefix=_UID_PREFIX,
        entropy_srcs=[
            "medvision-algorithm",
            algorithm.name,
            algorithm.version,
            algorithm.weights_sha256,
        ],
    )


def algorithm_equipment(algorithm: AlgorithmInfo) -> hd.ContributingEquipment:
    """The Contributing Equipment item that names the algorithm (AIR-01)."""
    item = hd.ContributingEquipment(
        manufacturer=truncate(algorithm.manufacturer, 64),
        purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=truncate(algorithm.name, 64),
        software_versions=truncate(algorithm.version, 64),
        contribution_description=truncate(
            f"{algorithm.family} algorithm {algorithm.name} {algorithm.version}, "
            f"weights sha256 {algorithm.weights_sha256}",
            1024,
        ),
    )
    item.DeviceUID = algorithm_device_uid(algorithm)
    return item


__all__ = ["DeviceInfo", "algorithm_device_uid", "algorithm_equipment"]
