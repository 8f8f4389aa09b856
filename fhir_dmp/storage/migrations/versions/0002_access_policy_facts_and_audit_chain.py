"""access policy facts and audit chain

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Rows written before this revision get neutral access facts (no type, no label, no depositor): professionals
see none of those documents until `fhir-dmp reindex` recomputes the facts from each resource's content.
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_chain',
    sa.Column('patient_key', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('head', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('patient_key')
    )
    op.create_table('dmp_accessor',
    sa.Column('patient_key', sa.String(length=64), nullable=False),
    sa.Column('accessor', sa.String(length=140), nullable=False),
    sa.Column('first_access', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('patient_key', 'accessor')
    )
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.add_column(sa.Column('doc_type', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('labels', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('doc_date', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('owner', sa.String(length=140), server_default='', nullable=False))
        batch_op.add_column(sa.Column('governed_by', sa.String(length=140), server_default='', nullable=False))
        batch_op.create_index('ix_resource_governed', ['governed_by'], unique=False)
    with op.batch_alter_table('resource', schema=None) as batch_op:  # the defaults only filled existing rows
        for column in ('doc_type', 'labels', 'owner', 'governed_by'):
            batch_op.alter_column(column, server_default=None)



def downgrade() -> None:
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_governed')
        batch_op.drop_column('governed_by')
        batch_op.drop_column('owner')
        batch_op.drop_column('doc_date')
        batch_op.drop_column('labels')
        batch_op.drop_column('doc_type')

    op.drop_table('dmp_accessor')
    op.drop_table('audit_chain')
