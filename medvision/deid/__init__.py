"""De-identification for data that leaves for anything but the source PACS.

A destination marked ``deidentify = true`` (the sender) and ``medvision export`` (reviewed
cases for model training) get the PS3.15 Annex E Basic Application Level Confidentiality
Profile with the options chosen in ``[deid]``, keyed patient pseudonyms and keyed UID
mapping (one site secret; the same input always gives the same output). See
docs/deidentification.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread

from medvision.config import Settings
from medvision.deid._profile import (
    TABLE_EDITION,
    DeidOptions,
    clean_text,
    deidentify,
    keyed_uid,
    listed_action,
    listed_tags,
    pseudonym,
)


@dataclass(frozen=True)
class Deidentifier:
    """The site secret and the chosen options, ready to apply to datasets and files."""

    secret: bytes
    options: DeidOptions = DeidOptions()

    @classmethod
    def from_settings(cls, settings: Settings) -> Deidentifier:
        d = settings.deid
        return cls(
            d.load_secret(),
            DeidOptions(
                retain_safe_private=d.retain_safe_private,
                retain_uids=d.retain_uids,
                clean_descriptors=d.clean_descriptors,
            ),
        )

    def dataset(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place and return it."""
        return deidentify(ds, self.secret, self.options)

    def file(self, path: Path) -> Dataset:
        """Read ``path`` and return its de-identified dataset (the file is not changed)."""
        return self.dataset(dcmread(path))

    def uid(self, uid: str) -> str:
        """What ``uid`` becomes (itself under the Retain UIDs Option)."""
        return uid if self.options.retain_uids else keyed_uid(self.secret, uid)


# After Deidentifier: the export module builds on it (and on the database).
from medvision.deid._export import ExportedCase, export_cases  # noqa: E402

__all__ = [
    "TABLE_EDITION",
    "ExportedCase",
    "export_cases",
    "DeidOptions",
    "Deidentifier",
    "clean_text",
    "deidentify",
    "keyed_uid",
    "listed_action",
    "listed_tags",
    "pseudonym",
]
