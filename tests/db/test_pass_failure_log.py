"""What the node's retrying loops write to the log when a pass fails: an operator reading
the log during a database restart must see one line per pass, not a screenful of
traceback, and must still get the traceback of a real bug."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from medvision.db import log_pass_failure


def _unreachable_database_error() -> OperationalError:
    """A real driver error: SQLite asked to open a file in a folder that does not exist."""
    engine = create_engine("sqlite:////nonexistent-folder/medvision.db")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as err:
        return err
    finally:
        engine.dispose()
    raise AssertionError("the database should have been unreachable")


def test_database_away_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("medvision.test")
    with caplog.at_level(logging.ERROR, logger="medvision.test"):
        log_pass_failure(log, "sender", _unreachable_database_error())
    (record,) = caplog.records
    assert record.exc_info is None
    message = record.getMessage()
    assert message.startswith("sender pass failed, database unavailable; retrying: ")
    assert "\n" not in message


def test_other_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("medvision.test")
    try:
        {}["missing"]
    except KeyError as err:
        with caplog.at_level(logging.ERROR, logger="medvision.test"):
            log_pass_failure(log, "study assembly", err)
    (record,) = caplog.records
    assert record.getMessage() == "study assembly pass failed; retrying"
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "Traceback" in caplog.text
