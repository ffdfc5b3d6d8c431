"""The one error hierarchy for bad input and failed processing.

Everything that can fail because of what a user or a PACS gave us raises a subclass of
:class:`MedvisionError` with a one-line, human-readable reason. The CLI prints that line and
exits non-zero; the node turns it into a failed job with the same reason. Nothing
else should escape to a user as a traceback.

    MedvisionError
    ├── InputError              the input cannot be used
    │   ├── NoDicomFound        nothing readable under the given path
    │   ├── NotAnImage          a non-image SOP class (SR, raw data, presentation state...)
    │   ├── MissingData         missing pixel data or required UIDs/attributes
    │   └── GeometryError       orientation, positions or spacing do not form a volume
    ├── NoMatchingSeries        no series in the study is accepted by a pipeline
    ├── UnknownPipeline         no pipeline of that name is registered or installed
    ├── PipelineError           a pipeline failed on an accepted series
    └── ResultError             SEG/SR/findings could not be written
"""

from __future__ import annotations


class MedvisionError(Exception):
    """Base class; ``str(err)`` is the one-line reason shown to the user."""


class InputError(MedvisionError):
    """The given DICOM input cannot be used."""


class NoDicomFound(InputError):
    """No readable DICOM instance was found where one was expected."""


class NotAnImage(InputError):
    """The series holds a SOP class that is not an image (e.g. SR, raw data)."""


class MissingData(InputError):
    """Pixel data or a required attribute (such as a UID) is missing or blank."""


class GeometryError(InputError):
    """Slices do not form a regular volume (orientation, positions, spacing, tilt)."""


class NoMatchingSeries(MedvisionError):
    """No series of a study is accepted by the pipeline that was asked for."""


class UnknownPipeline(MedvisionError):
    """No pipeline of the asked-for name exists (a typo, or a model not imported here).

    Its own type so that callers tell it from a bug: a bare ``KeyError`` from inside a
    pipeline must surface as an internal error, not as "unknown pipeline".
    """

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = available
        super().__init__(f"Unknown pipeline '{name}'; available: {', '.join(available) or 'none'}.")


class PipelineError(MedvisionError):
    """A pipeline failed while processing an accepted series."""


class ResultError(MedvisionError):
    """A result object (SEG, SR, findings) could not be built or written."""


__all__ = [
    "GeometryError",
    "InputError",
    "MedvisionError",
    "MissingData",
    "NoDicomFound",
    "NoMatchingSeries",
    "NotAnImage",
    "PipelineError",
    "ResultError",
    "UnknownPipeline",
]
