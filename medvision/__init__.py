"""medvision: a DICOM AI node for radiology.

DICOM studies in, MONAI pipelines, DICOM SEG and TID 1500 SR out, every step audited.
"""

__version__ = "0.1.0"
