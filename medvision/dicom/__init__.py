"""Reading DICOM: find studies and series on disk, turn a series into a :class:`Volume`."""

from medvision.dicom._load import load_series
from medvision.dicom._scan import scan
from medvision.dicom._series import SeriesInfo, StudyInfo
from medvision.dicom._volume import Volume

__all__ = ["SeriesInfo", "StudyInfo", "Volume", "load_series", "scan"]
