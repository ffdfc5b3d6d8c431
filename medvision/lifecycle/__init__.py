"""The lifecycle of studies, jobs and deliveries: their states, the transitions allowed
between them, and the only functions that change them.

Every writer (the ingest, the assembler, the workers, the sweeps, the sender, the review
API) changes a state through :func:`transition_study`, :func:`transition_job` or
:func:`transition_outbox`, and creates rows in their first state with :func:`new_study`
and :func:`new_job` (a delivery starts ``pending``, the column's default); tests/lifecycle
fails on a state written anywhere else. A transition is one conditional UPDATE (``WHERE
state IN`` the states the table allows to move to the new one): a row another writer
moved meanwhile is left as that writer left it, and the caller learns that it did not
move. The tables are :data:`STUDY_TRANSITIONS`, :data:`JOB_TRANSITIONS` and
:data:`OUTBOX_TRANSITIONS` (docs/architecture.md, "Lifecycle", draws them).

Audit events stay with the callers, written after the transition's transaction commits
(``study.complete``, ``study.refused``, ``job.*``, ``results.*``): the audit log takes the
database's write lock in a transaction of its own, which a transaction still holding a
state change would wait for.

**Lock order.** A transaction that changes a study, its jobs or its deliveries locks the
study row first (:func:`lock_studies`, ``SELECT ... FOR UPDATE`` on PostgreSQL; several in
UID order), then changes the jobs, then the outbox rows, and derives the study's state
last (:func:`refresh_study`, under the lock it already holds). The ingest (which locks its
batch's studies, then supersedes queued jobs of a re-opened one), the assembler (study,
then new jobs), a claim, a sweep taking jobs back and a worker recording a job's end (study,
then the job, then its outbox rows) and the sender (study, then the outbox row) all take
them in that order, so none of them can hold a job or outbox row while waiting for a study
that another holds while waiting for that row: no lock-order deadlock. On SQLite the locks
are no-ops; a transaction that writes holds the whole database there.
"""

from medvision.lifecycle._jobs import (
    JobTarget,
    OutboxTarget,
    new_job,
    transition_job,
    transition_outbox,
)
from medvision.lifecycle._study import (
    lock_studies,
    lock_study,
    new_study,
    refresh_study,
    refresh_study_state,
    transition_study,
)
from medvision.lifecycle._table import (
    DERIVED_STUDY_STATES,
    JOB_TRANSITIONS,
    OUTBOX_TRANSITIONS,
    STUDY_TRANSITIONS,
    allowed,
)

__all__ = [
    "DERIVED_STUDY_STATES",
    "JOB_TRANSITIONS",
    "OUTBOX_TRANSITIONS",
    "STUDY_TRANSITIONS",
    "JobTarget",
    "OutboxTarget",
    "allowed",
    "lock_studies",
    "lock_study",
    "new_job",
    "new_study",
    "refresh_study",
    "refresh_study_state",
    "transition_job",
    "transition_outbox",
    "transition_study",
]
