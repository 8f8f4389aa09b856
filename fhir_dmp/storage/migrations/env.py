"""Alembic environment: runs against the URL the caller passes in `config.attributes`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from fhir_dmp.storage.tables import metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several workers starting at once: only one migrates, the others wait and find it done.
            connection.execute(text("SELECT pg_advisory_xact_lock(724011)"))
        context.run_migrations()


run_migrations_online()
