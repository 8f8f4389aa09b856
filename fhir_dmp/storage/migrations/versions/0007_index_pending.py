"""traces indexed when a search needs them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

`index_pending` lists the AuditEvents whose search index rows are not written yet (storage/trace_index.py). Traces
stored before this revision keep the index rows they were written with.
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "index_pending",
        sa.Column("patient_key", sa.String(64), primary_key=True),
        sa.Column("resource_pk", PK, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String(140), nullable=False),
    )
    op.create_index("ix_index_pending_owner", "index_pending", ["owner"])


def downgrade() -> None:
    op.drop_table("index_pending")
