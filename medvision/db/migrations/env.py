"""Alembic environment for medvision.

Run either by :mod:`medvision.db._migrate` (which hands over an open connection in
``config.attributes["connection"]``, so the caller's engine, SQLite pragmas and PostgreSQL
advisory lock apply) or by the ``alembic`` command with ``sqlalchemy.url`` set.
``render_as_batch`` lets later revisions alter columns on SQLite, which has no ALTER COLUMN.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from medvision.db._models import Base

config = context.config
target_metadata = config.attributes.get("target_metadata", Base.metadata)


def _configure(connection) -> None:  # noqa: ANN001 - sqlalchemy Connection
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
