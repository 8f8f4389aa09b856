"""dmp access facts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

The table starts empty: a DMP without a facts row is decided from its Patient and Consents until `fhir-dmp reindex`
stores its facts row (and any write to its Patient or Consents does).
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dmp_facts',
    sa.Column('patient_key', sa.String(length=64), nullable=False),
    sa.Column('facts', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('patient_key')
    )


def downgrade() -> None:
    op.drop_table('dmp_facts')
