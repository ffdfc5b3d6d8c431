"""Response and request bodies of the API: what leaves the node, field by field.

Nothing here carries PHI beyond UIDs: the node's database holds no patient names or IDs,
and a reviewer's free-text comment is the reviewer's own responsibility (docs/api.md).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, model_validator

from medvision.db import Feedback, Job, Study


class StudyOut(BaseModel):
    study_instance_uid: str
    state: str
    version: int
    instances: int
    calling_aet: str
    first_received_at: datetime
    last_received_at: datetime
    completed_at: datetime | None
    reason: str

    @classmethod
    def of(cls, s: Study) -> StudyOut:
        return cls(
            study_instance_uid=s.study_instance_uid,
            state=s.state,
            version=s.version,
            instances=s.instance_count,
            calling_aet=s.calling_aet,
            first_received_at=s.first_received_at,
            last_received_at=s.last_received_at,
            completed_at=s.completed_at,
            reason=s.reason,
        )


class JobOut(BaseModel):
    id: int
    study_instance_uid: str
    study_version: int
    pipeline: str
    state: str
    attempts: int
    reason: str
    series_instance_uid: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timings: dict[str, Any]

    @classmethod
    def of(cls, j: Job) -> JobOut:
        return cls.model_validate(j, from_attributes=True)


class DeliveryOut(BaseModel):
    destination: str
    ae_title: str
    sop_instance_uid: str
    sop_class_uid: str
    state: str
    attempts: int
    last_error: str
    sent_at: datetime | None


class StudyDetail(StudyOut):
    jobs: list[JobOut]
    deliveries: list[DeliveryOut]


class Decision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    COMMENT = "comment"


class DecisionIn(BaseModel):
    decision: Decision
    comment: str = Field(default="", max_length=4000)


class MissedLesionIn(BaseModel):
    """Where the model missed a lesion: a pixel on a slice of the analysed series (0-based
    slice index in the job's volume order, x = column, y = row), or a patient point in LPS
    millimetres, or both."""

    slice_index: int | None = Field(default=None, ge=0)
    x: float | None = Field(default=None, ge=0)
    y: float | None = Field(default=None, ge=0)
    lps: tuple[float, float, float] | None = None
    job_id: int | None = None
    comment: str = Field(default="", max_length=4000)

    @model_validator(mode="after")
    def _located(self) -> MissedLesionIn:
        pixel = (self.slice_index, self.x, self.y)
        if any(v is not None for v in pixel) and any(v is None for v in pixel):
            raise ValueError("slice_index, x and y must be given together")
        if self.lps is None and self.slice_index is None:
            raise ValueError("give slice_index with x and y (pixels), or lps (mm), or both")
        return self

    def location(self) -> dict[str, Any]:
        loc: dict[str, Any] = {}
        if self.slice_index is not None:
            loc.update(slice_index=self.slice_index, x=self.x, y=self.y)
        if self.lps is not None:
            loc["lps"] = list(self.lps)
        return loc


class FeedbackOut(BaseModel):
    id: int
    kind: str
    study_instance_uid: str
    job_id: int | None
    finding_number: int | None
    decision: str
    comment: str
    location: dict[str, Any]
    user: str
    created_at: datetime
    sr_sop_instance_uid: str | None

    @classmethod
    def of(cls, f: Feedback) -> FeedbackOut:
        return cls.model_validate(f, from_attributes=True)


class UserIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    roles: list[str] = Field(min_length=1)
    password: str | None = Field(default=None, min_length=1)


__all__ = [
    "Decision",
    "DecisionIn",
    "DeliveryOut",
    "FeedbackOut",
    "JobOut",
    "MissedLesionIn",
    "StudyDetail",
    "StudyOut",
    "UserIn",
]
