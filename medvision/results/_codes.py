"""Every coded concept and unit that medvision writes into a SEG or an SR, in one place.

Why one module: the SEG, the SR and ``docs/results.md`` must name the same concepts, and a
reviewer should be able to check each choice against PS3.16 without reading builder code.
Codes are SNOMED CT (``SCT``) or DICOM (``DCM``) and UCUM units; the deprecated ``SRT``
designator is refused (STANDARDS SEG-13) because its values differ from SCT's and
``dciodvfy`` warns about it.
"""

from __future__ import annotations

import re

from highdicom.color import CIELabColor
from highdicom.sr import CodedConcept
from pydicom.sr.coding import Code as PydicomCode

from medvision.errors import ResultError
from medvision.findings import AlgorithmInfo, Code

# --- algorithm identity (SEG Algorithm Identification, SR TID 4019) -----------------------
#: CID 7162. A trained model is "Artificial Intelligence"; a classical detector (HU bands
#: plus morphological openings, no learned weights) is "Morphological Operations": calling
#: it AI would misinform the reader about what made the result.
ALGORITHM_FAMILIES: dict[str, PydicomCode] = {
    "AI": PydicomCode("123110", "DCM", "Artificial Intelligence"),
    "classical": PydicomCode("123104", "DCM", "Morphological Operations"),
}

#: CID 7005: the purpose of the Contributing Equipment item that names the algorithm (AIR-01).
PROCESSING_EQUIPMENT = PydicomCode("109102", "DCM", "Processing Equipment")

# --- SR document-level concepts ------------------------------------------------------------
#: Procedure reported (TID 1500 row 4, CID 100): the imaging procedure that was analysed,
#: not the algorithm. Keyed by the source Modality.
PROCEDURES: dict[str, PydicomCode] = {
    "CT": PydicomCode("77477000", "SCT", "Computed Tomography"),
    "MR": PydicomCode("113091000", "SCT", "Magnetic Resonance Imaging"),
    "PT": PydicomCode("82918005", "SCT", "Positron Emission Tomography"),
}
#: Fallback when the modality has no entry: "Imaging procedure".
IMAGING_PROCEDURE = PydicomCode("363679005", "SCT", "Imaging")

#: TID 1500 row 12: report-level qualitative evaluations container (CODE/TEXT only).
QUALITATIVE_EVALUATIONS = PydicomCode("C0034375", "UMLS", "Qualitative Evaluations")
#: CID 230-like presence values for "did the algorithm find X" (SR-15).
PRESENT = PydicomCode("52101004", "SCT", "Present")
ABSENT = PydicomCode("272519000", "SCT", "Absent")
#: The generic thing looked for when the caller does not name its lesion labels.
LESION = PydicomCode("52988006", "SCT", "Lesion")

# --- measurements (TID 300 NUM in TID 1411 groups) -----------------------------------------
VOLUME = PydicomCode("118565006", "SCT", "Volume")
LONG_AXIS = PydicomCode("103339001", "SCT", "Long Axis")
SHORT_AXIS = PydicomCode("103340004", "SCT", "Short Axis")
#: CID 7469 "Attenuation Coefficient" with a Derivation modifier (CID 7464) of Mean/Maximum:
#: the pattern PS3.16 gives for ROI statistics of CT numbers.
ATTENUATION = PydicomCode("112031", "DCM", "Attenuation Coefficient")
MEAN = PydicomCode("373098007", "SCT", "Mean")
MAXIMUM = PydicomCode("56851009", "SCT", "Maximum")
#: The algorithm's confidence in a finding. DICOM has no single "AI confidence" concept
#: (STANDARDS SR-12); "Certainty of Finding" (CID 6048, CAD operating point axis) is the
#: concept CAD reports use for "how likely is this mark a true finding". We write it as a
#: fraction in [0, 1] with the UCUM unit "1"; how it was computed travels as an
#: Algorithm Parameters item on the same NUM.
CONFIDENCE = PydicomCode("111012", "DCM", "Certainty of Finding")

UNIT_ML = PydicomCode("mL", "UCUM", "milliliter")
UNIT_MM = PydicomCode("mm", "UCUM", "millimeter")
UNIT_HU = PydicomCode("[hnsf'U]", "UCUM", "Hounsfield unit")
UNIT_FRACTION = PydicomCode("1", "UCUM", "no units")

#: Colours (RGB) for segments whose label gives no CIELab value, by segment number.
_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]

_CS_ALLOWED = re.compile(r"[^A-Z0-9 _]")


def coded(code: Code) -> CodedConcept:
    """Our :class:`Code` as highdicom's, refusing the deprecated SRT designator."""
    if code.scheme.upper() == "SRT":
        raise ResultError(
            f"Code {code.value} '{code.meaning}' uses the deprecated SRT scheme; "
            "give the SNOMED CT (SCT) code instead."
        )
    if not (code.value and code.scheme and code.meaning):
        raise ResultError(f"Code {code!r} has an empty value, scheme or meaning.")
    return CodedConcept(code.value, code.scheme, code.meaning)


def family_code(algorithm: AlgorithmInfo) -> PydicomCode:
    """CID 7162 family for an algorithm; an unknown family is an error, not a guess."""
    try:
        return ALGORITHM_FAMILIES[algorithm.family]
    except KeyError:
        known = ", ".join(sorted(ALGORITHM_FAMILIES))
        raise ResultError(
            f"Algorithm family '{algorithm.family}' is unknown; use one of {known}."
        ) from None


def procedure_code(modality: str) -> PydicomCode:
    return PROCEDURES.get(modality.upper(), IMAGING_PROCEDURE)


def display_color(cielab: tuple[int, int, int] | None, segment_number: int) -> CIELabColor:
    """The label's colour, or a fixed palette entry so colours match across viewers."""
    if cielab is not None:
        return CIELabColor.from_dicom_value(tuple(int(v) for v in cielab))
    r, g, b = _PALETTE[(segment_number - 1) % len(_PALETTE)]
    return CIELabColor.from_rgb(r, g, b)


def content_label(text: str) -> str:
    """A valid CS ContentLabel: A-Z, 0-9, space and underscore, at most 16 characters."""
    label = _CS_ALLOWED.sub("_", text.upper())[:16].strip()
    return label or "MEDVISION"


def generated_by(algorithm: AlgorithmInfo) -> str:
    """The words a viewer shows next to the overlay (AIR-05)."""
    if algorithm.family == "AI":
        return "AI-generated, not verified"
    return "Computer-generated, not verified"


def truncate(text: str, limit: int) -> str:
    """Shorten a free-text value to its VR's limit (LO 64, SH 16, ...)."""
    return text if len(text) <= limit else text[: limit - 1] + "~"


def algorithm_parameters(algorithm: AlgorithmInfo) -> dict[str, str]:
    """Parameters written with the algorithm, the weights hash always first."""
    return {"weights_sha256": algorithm.weights_sha256, **dict(algorithm.parameters)}


__all__ = [
    "ABSENT",
    "ALGORITHM_FAMILIES",
    "ATTENUATION",
    "CONFIDENCE",
    "LESION",
    "LONG_AXIS",
    "MAXIMUM",
    "MEAN",
    "PRESENT",
    "PROCESSING_EQUIPMENT",
    "QUALITATIVE_EVALUATIONS",
    "SHORT_AXIS",
    "UNIT_FRACTION",
    "UNIT_HU",
    "UNIT_ML",
    "UNIT_MM",
    "VOLUME",
    "algorithm_parameters",
    "coded",
    "content_label",
    "display_color",
    "family_code",
    "generated_by",
    "procedure_code",
    "truncate",
]
