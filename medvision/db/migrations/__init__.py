"""Alembic migration environment, shipped inside the package so that an installed node can
upgrade its own database (``medvision db upgrade``) without a source checkout."""
