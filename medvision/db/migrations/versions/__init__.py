"""Alembic revisions, oldest first (0001 = the schema before users/tokens/feedback)."""
