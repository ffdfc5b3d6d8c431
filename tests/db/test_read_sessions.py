"""``Database.read``: the API's reads neither wait for writers nor write."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from medvision.db import Database, Study


def test_a_read_refuses_to_write_and_leaves_the_connection_writable(db_url: str) -> None:
    db = Database(db_url)
    db.create_schema()
    with pytest.raises(DBAPIError), db.read() as session:
        session.add(Study(study_instance_uid="1.2.3"))
        session.flush()
    for _ in range(3):  # the pooled connection is writable again for the next writer
        with db.session() as session:
            session.add(Study(study_instance_uid=f"1.2.{_ + 4}"))
        with db.read() as session:
            assert session.scalar(select(Study).where(Study.study_instance_uid == "1.2.4"))
    with db.read() as session:
        assert "1.2.3" not in set(session.scalars(select(Study.study_instance_uid)))
    db.dispose()


def test_a_read_does_not_queue_behind_a_writer_that_waits(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock (an acceptor's indexer); a writer thread of
    this process waits for it, holding the process's lock; a read still answers at once."""
    path = tmp_path / "medvision.db"
    db = Database(f"sqlite:///{path}")
    db.create_schema()
    with db.session() as session:
        session.add(Study(study_instance_uid="1.2.3"))
    other = sqlite3.connect(str(path))
    other.execute("BEGIN IMMEDIATE")
    writing = threading.Event()

    def writer() -> None:
        with db.session() as session:
            writing.set()
            session.add(Study(study_instance_uid="1.2.4"))
            session.flush()  # waits for the other process's lock (busy timeout 30 s)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        with db.read() as session:
            assert session.scalars(select(Study.study_instance_uid)).all() == ["1.2.3"]
        assert thread.is_alive(), "the writer should still be waiting for the lock"
    finally:
        other.rollback()
        other.close()
        thread.join(60)
    with db.read() as session:
        assert sorted(session.scalars(select(Study.study_instance_uid))) == ["1.2.3", "1.2.4"]
    db.dispose()
