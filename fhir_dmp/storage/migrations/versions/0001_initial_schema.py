"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 19:40:14.645535
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('resource',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('version_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('resource_type', 'id', name='uq_resource_type_id')
    )
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.create_index('ix_resource_patient', ['patient_key', 'resource_type'], unique=False)
        batch_op.create_index('ix_resource_type_updated', ['resource_type', 'last_updated'], unique=False)

    op.create_table('resource_version',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=False),
    sa.Column('last_updated', sa.DateTime(), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('content', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('resource_type', 'id', 'version_id', name='uq_version')
    )
    with op.batch_alter_table('resource_version', schema=None) as batch_op:
        batch_op.create_index('ix_version_type_pk', ['resource_type', 'pk'], unique=False)

    op.create_table('idx_token',
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('system', sa.String(length=255), nullable=False),
    sa.Column('code', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], ondelete='CASCADE')
    )
    with op.batch_alter_table('idx_token', schema=None) as batch_op:
        batch_op.create_index('ix_token_lookup', ['resource_type', 'param', 'code', 'system'], unique=False)
        batch_op.create_index('ix_token_resource', ['resource_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('idx_token', schema=None) as batch_op:
        batch_op.drop_index('ix_token_resource')
        batch_op.drop_index('ix_token_lookup')

    op.drop_table('idx_token')
    with op.batch_alter_table('resource_version', schema=None) as batch_op:
        batch_op.drop_index('ix_version_type_pk')

    op.drop_table('resource_version')
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_type_updated')
        batch_op.drop_index('ix_resource_patient')

    op.drop_table('resource')
