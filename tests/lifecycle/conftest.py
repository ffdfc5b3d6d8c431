"""The lifecycle's tests run on the database fixture of tests/jobs (SQLite, and PostgreSQL
when ``MEDVISION_TEST_POSTGRES_URL`` is set)."""

from tests.jobs import conftest as jobs_conftest

db = jobs_conftest.db
