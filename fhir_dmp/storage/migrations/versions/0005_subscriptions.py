"""subscriptions and their outbox of events

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subscription',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=140), nullable=False),
    sa.Column('subscriber', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('criteria', sa.Text(), nullable=False),
    sa.Column('endpoint', sa.String(length=1024), nullable=False),
    sa.Column('content', sa.String(length=16), nullable=False),
    sa.Column('heartbeat', sa.Integer(), nullable=True),
    sa.Column('timeout', sa.Integer(), nullable=False),
    sa.Column('max_count', sa.Integer(), nullable=False),
    sa.Column('base_url', sa.String(length=512), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(), nullable=False),
    sa.Column('events', sa.BigInteger(), nullable=False),
    sa.Column('delivered', sa.BigInteger(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('next_attempt', sa.DateTime(), nullable=True),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.Column('last_sent', sa.DateTime(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_subscription_patient', 'subscription', ['patient_key', 'status'])
    op.create_index('ix_subscription_owner', 'subscription', ['owner'])
    op.create_table('subscription_event',
    sa.Column('subscription_id', sa.String(length=64), nullable=False),
    sa.Column('number', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=False),
    sa.Column('focus', sa.String(length=200), nullable=False),
    sa.Column('occurred', sa.DateTime(), nullable=False),
    sa.Column('delivered_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('subscription_id', 'number')
    )


def downgrade() -> None:
    op.drop_table('subscription_event')
    op.drop_index('ix_subscription_owner', 'subscription')
    op.drop_index('ix_subscription_patient', 'subscription')
    op.drop_table('subscription')
