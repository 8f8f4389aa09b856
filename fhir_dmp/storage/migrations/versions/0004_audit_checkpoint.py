"""signed checkpoints of the audit chains

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

The table starts empty: the first `fhir-dmp audit seal` seals every chain as it stands (after checking its links).
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_checkpoint',
    sa.Column('number', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('signature', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('number')
    )


def downgrade() -> None:
    op.drop_table('audit_checkpoint')
