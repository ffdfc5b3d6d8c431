"""The lifecycle: each transition of the tables works and every other one is refused, on a
real database; a study's state is derived under its row lock; and no module of medvision
writes a study, job or delivery state anywhere but in medvision.lifecycle."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

import medvision
from medvision.db import Database, Job, JobState, Outbox, OutboxState, Study, StudyState
from medvision.lifecycle import (
    JOB_TRANSITIONS,
    OUTBOX_TRANSITIONS,
    STUDY_TRANSITIONS,
    allowed,
    new_job,
    new_study,
    refresh_study,
    transition_job,
    transition_outbox,
    transition_study,
)
from tests.jobs.conftest import ON_POSTGRESQL

ROOT = Path(medvision.__file__).parent


def test_the_tables_name_every_state() -> None:
    for table, states in (
        (STUDY_TRANSITIONS, StudyState),
        (JOB_TRANSITIONS, JobState),
        (OUTBOX_TRANSITIONS, OutboxState),
    ):
        assert set(table) == set(states)
        assert all(set(tos) <= set(states) for tos in table.values())


def _study_row(uid: str, state: str) -> Study:
    # The tests write the states they start from directly; medvision itself may not.
    return Study(study_instance_uid=uid, state=state, version=1)


def test_every_study_transition_of_the_table_and_no_other(db: Database) -> None:
    pairs = [(old, new) for old in StudyState for new in StudyState]
    with db.session() as session:
        session.add_all(_study_row(f"1.2.{i}", old) for i, (old, _) in enumerate(pairs))
    with db.session() as session:
        moved = [
            transition_study(session, f"1.2.{i}", new, reason=f"to {new}")
            for i, (_, new) in enumerate(pairs)
        ]
    with db.session() as session:
        rows = {s.study_instance_uid: s for s in session.scalars(select(Study))}
    for i, (old, new) in enumerate(pairs):
        ok = allowed(STUDY_TRANSITIONS, old, new)
        row = rows[f"1.2.{i}"]
        assert moved[i] is ok, (old, new)
        assert (row.state, row.reason) == ((new, f"to {new}") if ok else (old, "")), (old, new)


def test_every_job_transition_of_the_table_and_no_other(db: Database) -> None:
    pairs = [(old, new) for old in JobState for new in JobState]
    with db.session() as session:
        session.add(_study_row("1.3", StudyState.RECEIVING))  # left alone by the refresh
        session.add_all(
            Job(id=i + 1, study_instance_uid="1.3", study_version=1, pipeline=f"p{i}", state=old)
            for i, (old, _) in enumerate(pairs)
        )
    with db.session() as session:
        moved = [transition_job(session, i + 1, new) for i, (_, new) in enumerate(pairs)]
    with db.session() as session:
        rows = {j.id: j.state for j in session.scalars(select(Job))}
    for i, (old, new) in enumerate(pairs):
        ok = allowed(JOB_TRANSITIONS, old, new)
        assert moved[i] is ok, (old, new)
        assert rows[i + 1] == (new if ok else old), (old, new)


def test_every_outbox_transition_of_the_table_and_no_other(db: Database) -> None:
    pairs = [(old, new) for old in OutboxState for new in OutboxState]
    with db.session() as session:
        session.add(_study_row("1.4", StudyState.RECEIVING))
        session.add_all(
            Outbox(
                id=i + 1,
                job_id=1,
                study_instance_uid="1.4",
                destination="pacs",
                ae_title="PACS",
                host="127.0.0.1",
                port=104,
                path=f"/r/{i}.dcm",
                sop_instance_uid=f"1.4.{i}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                state=old,
            )
            for i, (old, _) in enumerate(pairs)
        )
    with db.session() as session:
        moved = [transition_outbox(session, i + 1, new) for i, (_, new) in enumerate(pairs)]
    with db.session() as session:
        rows = {o.id: o.state for o in session.scalars(select(Outbox))}
    for i, (old, new) in enumerate(pairs):
        ok = allowed(OUTBOX_TRANSITIONS, old, new)
        assert moved[i] is ok, (old, new)
        assert rows[i + 1] == (new if ok else old), (old, new)


def test_narrowing_to_a_state_the_table_does_not_allow_is_a_mistake(db: Database) -> None:
    with db.session() as session, pytest.raises(ValueError, match="not an allowed"):
        transition_job(session, 1, JobState.DONE, narrow=[JobState.QUEUED])


def test_new_rows_start_in_the_first_state(db: Database) -> None:
    with db.session() as session:
        session.add(new_study(study_instance_uid="1.5", version=1))
        session.add(new_job(study_instance_uid="1.5", study_version=1, pipeline="p"))
    with db.session() as session:
        assert session.scalars(select(Study.state)).one() == StudyState.RECEIVING
        assert session.scalars(select(Job.state)).one() == JobState.QUEUED


def test_a_job_transition_derives_its_study_state(db: Database) -> None:
    with db.session() as session:
        session.add(_study_row("1.6", StudyState.QUEUED))
        session.add(new_job(id=1, study_instance_uid="1.6", study_version=1, pipeline="p"))
    with db.session() as session:
        assert transition_job(session, 1, JobState.RUNNING, worker="w:1")
    with db.session() as session:
        assert session.scalars(select(Study.state)).one() == StudyState.RUNNING
        # A study re-opened meanwhile is not the refresh's to change.
        transition_study(session, "1.6", StudyState.RECEIVING, version=2)
        assert transition_job(session, 1, JobState.DONE)
        assert refresh_study(session, "1.6") == StudyState.RECEIVING


@pytest.mark.parametrize("db", [ON_POSTGRESQL], indirect=True)  # SQLite: one writer at a time
def test_two_jobs_ending_at_once_leave_the_study_derived_from_both(db: Database) -> None:
    """Each worker's transaction derives the study from the jobs it sees. Without the study
    row lock, the second would read the first's job as still running (not committed yet)
    and leave the study ``running`` for good; with it, the second waits and sees both."""
    with db.session() as session:
        session.add(_study_row("1.7", StudyState.RUNNING))
        session.add_all(
            Job(id=n, study_instance_uid="1.7", study_version=1, pipeline=f"p{n}", state="running")
            for n in (1, 2)
        )
    second_done = threading.Event()

    def second() -> None:
        with db.session() as session:
            transition_job(session, 2, JobState.DONE)
        second_done.set()

    with db.session() as session:
        assert transition_job(session, 1, JobState.DONE)  # holds the study row now
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert not second_done.is_set(), "the second transaction did not wait for the study"
    thread.join(10)
    assert second_done.is_set()
    with db.session() as session:
        assert session.scalars(select(Study.state)).one() == StudyState.DONE


# --- no state written outside medvision.lifecycle -----------------------------------------

ENUMS = {"StudyState", "JobState", "OutboxState"}
#: The strings stored for study, job and delivery states.
LIFECYCLE_VALUES = {str(s) for enum in (StudyState, JobState, OutboxState) for s in enum}
#: What workers, acceptors and receivers report of themselves (their own rows' ``state``;
#: not lifecycle states, and written where they run).
HEARTBEAT_VALUES = {"idle", "busy", "stopped", "starting", "serving", "restarting"}
assert not LIFECYCLE_VALUES & HEARTBEAT_VALUES
#: Heartbeat rows' states written from a variable in a module that also has the lifecycle's
#: tables: (module, the statement).
HEARTBEAT_WRITES = {("node/_receivers.py", "row.state = state")}
#: The tables whose ``state`` is the lifecycle's.
TABLES = {"Study", "Job", "Outbox"}
#: The constructors and the UPDATE whose ``state=`` keyword writes a row's state.
ROW_WRITERS = {"Study", "Job", "Outbox", "values"}


def _names_lifecycle_state(value: ast.AST) -> bool:
    for node in ast.walk(value):
        if isinstance(node, ast.Name) and node.id in ENUMS:
            return True
        if isinstance(node, ast.Constant) and node.value in LIFECYCLE_VALUES:
            return True
    return False


def _is_heartbeat_literal(value: ast.AST) -> bool:
    return isinstance(value, ast.Constant) and value.value in HEARTBEAT_VALUES


def _state_writes(tree: ast.AST) -> list[tuple[ast.AST, ast.AST, str]]:
    """(statement, value, kind) for every place that may write a ``state``: assignment to
    ``x.state`` or ``x["state"]``, ``setattr(x, "state", v)``, a ``state=`` keyword, a
    ``"state"`` key in a dict display."""
    found: list[tuple[ast.AST, ast.AST, str]] = []

    def target(stmt: ast.AST, tgt: ast.AST, value: ast.AST) -> None:
        if isinstance(tgt, ast.Tuple) and isinstance(value, ast.Tuple):
            for t, v in zip(tgt.elts, value.elts, strict=False):
                target(stmt, t, v)
        elif isinstance(tgt, ast.Attribute) and tgt.attr == "state":
            found.append((stmt, value, "assign"))
        elif isinstance(tgt, ast.Subscript) and getattr(tgt.slice, "value", None) == "state":
            found.append((stmt, value, "assign"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for tgt in node.targets:
                target(node, tgt, node.value)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign) and node.value is not None:
            target(node, node.target, node.value)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name == "setattr" and len(node.args) == 3:
                if getattr(node.args[1], "value", None) == "state":
                    found.append((node, node.args[2], "assign"))
            for kw in node.keywords:
                if kw.arg == "state":
                    found.append((node, kw.value, "row" if name in ROW_WRITERS else "other"))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "state":
                    found.append((node, value, "other"))
    return found


def _imports_the_tables(tree: ast.AST) -> bool:
    """Whether the module can reach a study, job or outbox row: it names their table.
    (The acceptors' and workers' rows are written by modules that do not.)"""
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "medvision.db"
        and any(alias.name in TABLES for alias in node.names)
        for node in ast.walk(tree)
    )


def foreign_state_writes(source: str, name: str) -> list[str]:
    """The state writes in ``source`` (module ``name``, relative to medvision/) that only
    medvision.lifecycle may make: any naming a study/job/delivery state; in a module that
    imports the Study, Job or Outbox table, also any assignment of another value than a
    heartbeat state, or a row constructor's or UPDATE's ``state=``."""
    tree = ast.parse(source)
    with_tables = _imports_the_tables(tree)
    bad = []
    for stmt, value, kind in _state_writes(tree):
        text = ast.get_source_segment(source, stmt) or ""
        if _names_lifecycle_state(value):
            pass
        elif not with_tables or kind == "other" or _is_heartbeat_literal(value):
            continue
        elif (name, text) in HEARTBEAT_WRITES:
            continue
        bad.append(f"{name}:{stmt.lineno}: {text.splitlines()[0]}")
    return bad


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("job.state = JobState.DONE", True),
        ("row.state, row.reason = 'queued', ''", True),
        ("session.execute(update(Job).values(state=JobState.SUPERSEDED))", True),
        ("Study(study_instance_uid=uid, state=StudyState.RECEIVING)", True),
        ("values = {'state': JobState.FAILED, 'reason': why}", True),
        ("setattr(job, 'state', 'done')", True),
        ("from medvision.db import Job\njob.state = new", True),
        ("from medvision.db import Job\nJob(pipeline=p, state=s)", True),
        ("from medvision.db import Job\nrow.state, row.current_job_id = 'idle', None", False),
        ("from medvision.db import Study\nupdate(Acceptor).values(state='stopped')", False),
        ("from medvision.db import Acceptor\nvalues['state'] = state", False),
        ("from medvision.db import Outbox\nvalues['state'] = state", True),
        ("from medvision.db import Job\nout = {'state': s.state}", False),
        ("rng.bit_generator.state = state['numpy_rng']", False),
        ("query.where(Job.state == JobState.QUEUED)", False),
    ],
)
def test_the_scan_tells_a_state_write(source: str, flagged: bool) -> None:
    assert bool(foreign_state_writes(source, "x.py")) is flagged


def test_no_state_is_written_outside_the_lifecycle() -> None:
    bad: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name.startswith(("lifecycle/", "db/migrations/")):
            continue
        bad += foreign_state_writes(path.read_text(encoding="utf-8"), name)
    assert bad == [], "write states through medvision.lifecycle:\n" + "\n".join(bad)
