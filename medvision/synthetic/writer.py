"""CT Image Storage instances with the headers a real scanner writes.

The header set follows the CT Image IOD (Patient, General Study, Patient Study, General
Series, Frame of Reference, General Equipment, General Acquisition, General Image, Image Plane,
Image Pixel, CT Image, VOI LUT, SOP Common) so that ``dciodvfy`` reports no errors, and so that
readers meet what they meet in practice: 12 stored bits, intercept -1024, z falling with the
instance number, SliceLocation equal to the z position, and a SpacingBetweenSlices that
agrees with the positions (highdicom refuses a series where it does not).

Every UID is derived from the seed, and dates are fixed, so the same seed writes the same
bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medvision.synthetic.anatomy import FIELD_OF_VIEW_MM, Grid

PATIENT_NAME = "SYNTHETIC^CHEST"
PATIENT_ID = "MV-SYN-0001"
STUDY_DATE = "20240312"
STUDY_TIME = "101500"
SERIES_NUMBER = 1
RESCALE_INTERCEPT = -1024
BITS_STORED = 12


class TransferSyntax(StrEnum):
    """How the pixel data is stored. All lossless: the ground truth is exact."""

    EXPLICIT = "explicit"
    IMPLICIT = "implicit"
    RLE = "rle"
    JPEG2000 = "jpeg2000"
    JPEGLS = "jpegls"

    @property
    def uid(self) -> UID:
        return {
            "explicit": ExplicitVRLittleEndian,
            "implicit": ImplicitVRLittleEndian,
            "rle": RLELossless,
            "jpeg2000": JPEG2000Lossless,
            "jpegls": JPEGLSLossless,
        }[self.value]


@dataclass(frozen=True)
class StudyIdentity:
    """The UIDs of one generated study, all derived from the seed."""

    seed: int
    study_uid: str
    series_uid: str
    frame_uid: str

    @classmethod
    def from_seed(cls, seed: int) -> StudyIdentity:
        return cls(seed, _uid(seed, "study"), _uid(seed, "series"), _uid(seed, "frame"))

    def sop_uid(self, k: int) -> str:
        return _uid(self.seed, "sop", k)


def _uid(seed: int, *parts: object) -> str:
    """A UID under pydicom's root hashed from the seed and a role: fixed, yet unique to it."""
    return generate_uid(entropy_srcs=["medvision dicom_samples", str(seed), *map(str, parts)])


def file_name(k: int) -> str:
    """Slice ``k`` (0-based) as a typical viewer export names it: IM-<series>-<instance>."""
    return f"IM-{SERIES_NUMBER:04d}-{k + 1:04d}.dcm"


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, without float noise."""
    text = f"{value:.7f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def to_stored(hu: np.ndarray) -> np.ndarray:
    """HU (float) to stored values: rounded, offset by the intercept, clipped to 12 bits."""
    return np.clip(np.rint(hu) - RESCALE_INTERCEPT, 0, 2**BITS_STORED - 1).astype(np.uint16)


class SeriesWriter:
    """Writes the slices of one series. The header is built once and only what differs per
    slice (UID, instance number, position, times, pixels) is changed, because building a
    100-element header per slice would dominate the time for a 300-slice study."""

    def __init__(
        self, out_dir: Path, grid: Grid, ident: StudyIdentity, syntax: TransferSyntax
    ) -> None:
        self.out_dir, self.grid, self.ident, self.syntax = Path(out_dir), grid, ident, syntax
        self.ds = build_header(grid, ident)

    def write(self, k: int, pixels: np.ndarray) -> Path:
        """Write slice ``k`` (0-based) with ``pixels`` (stored values, uint16)."""
        ds, z = self.ds, self.grid.z(k)
        sop_uid = self.ident.sop_uid(k)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        ds.AcquisitionTime = ds.ContentTime = f"1015{31 + k // 100:02d}.{(k % 100) * 10000:06d}"
        ds.ImagePositionPatient = [_ds(self.grid.x0), _ds(self.grid.y0), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.DataCollectionCenterPatient = [0.0, 0.0, z]
        ds.ReconstructionTargetCenterPatient = [0.0, 0.0, z]
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
        ds["PixelData"].VR = "OW"
        if self.syntax in (TransferSyntax.EXPLICIT, TransferSyntax.IMPLICIT):
            ds.file_meta.TransferSyntaxUID = self.syntax.uid
        else:
            # pydicom would otherwise give the compressed instance a new random UID.
            ds.compress(self.syntax.uid, generate_instance_uid=False)
        path = self.out_dir / file_name(k)
        ds.save_as(path, enforce_file_format=True)
        return path


def build_header(grid: Grid, ident: StudyIdentity) -> Dataset:
    """Everything in a slice's header that is the same for the whole series."""
    z = grid.z(0)
    sop_uid = ident.sop_uid(0)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = STUDY_DATE
    ds.InstanceCreationTime = "101600"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = STUDY_TIME
    ds.SeriesTime = "101530"
    ds.AcquisitionTime = ds.ContentTime = "101531.000000"
    ds.AccessionNumber = "MVSYN0001"
    ds.Modality = "CT"
    ds.Manufacturer = "medvision synthetic"
    ds.InstitutionName = "medvision synthetic data"
    ds.ReferringPhysicianName = ""
    ds.StationName = "MVSYN"
    ds.StudyDescription = "CT CHEST (SYNTHETIC)"
    ds.SeriesDescription = f"Chest {_ds(grid.slice_mm)} mm STANDARD (synthetic)"
    ds.ManufacturerModelName = "dicom_samples chest phantom"
    ds.SyntheticData = "YES"
    # Patient and Patient Study: a fictitious patient
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.PatientAge = "064Y"
    ds.PatientSize = "1.75"
    ds.PatientWeight = "75"
    # CT acquisition and reconstruction, as a 64-row helical scanner reports them
    ds.BodyPartExamined = "CHEST"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = _ds(grid.slice_mm)
    ds.KVP = "120"
    ds.SpacingBetweenSlices = _ds(grid.slice_mm)
    ds.DataCollectionDiameter = "500"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "dicom_samples 1"
    ds.ProtocolName = "CHEST ROUTINE"
    ds.ReconstructionDiameter = _ds(FIELD_OF_VIEW_MM)
    ds.DistanceSourceToDetector = "1040"
    ds.DistanceSourceToPatient = "570"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "160"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "120"
    ds.Exposure = "60"
    ds.FilterType = "BODY"
    ds.GeneratorPower = "14"
    ds.FocalSpots = "1.2"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth = 0.625
    ds.TotalCollimationWidth = 40.0
    ds.TableSpeed = 79.0
    ds.TableFeedPerRotation = 39.5
    ds.SpiralPitchFactor = 0.984375
    ds.CTDIvol = 8.2
    phantom = Dataset()
    phantom.CodeValue = "113691"
    phantom.CodingSchemeDesignator = "DCM"
    phantom.CodeMeaning = "IEC Body Dosimetry Phantom"
    ds.CTDIPhantomTypeCodeSequence = [phantom]
    ds.DataCollectionCenterPatient = [0.0, 0.0, z]
    ds.ReconstructionTargetCenterPatient = [0.0, 0.0, z]
    # Study, series, frame of reference, image plane
    ds.StudyInstanceUID = ident.study_uid
    ds.SeriesInstanceUID = ident.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = SERIES_NUMBER
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [_ds(grid.x0), _ds(grid.y0), _ds(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = ident.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(z)
    ds.ImageComments = "Synthetic chest phantom made by medvision dicom_samples: no patient data."
    # Image pixel and rescale
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = grid.rows
    ds.PixelSpacing = [_ds(grid.pixel_mm), _ds(grid.pixel_mm)]
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.WindowCenter = ["-600", "40"]
    ds.WindowWidth = ["1500", "400"]
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]
    ds.LossyImageCompression = "00"
    return ds
