"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("version_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("resource_type", "id", name="uq_resource_type_id"),
    )
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.create_index("ix_resource_patient", ["patient_key", "resource_type"], unique=False)
        batch_op.create_index("ix_resource_type_updated", ["resource_type", "last_updated"], unique=False)

    op.create_table(
        "resource_version",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("last_updated", sa.DateTime(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("resource_type", "id", "version_id", name="uq_version"),
    )
    with op.batch_alter_table("resource_version", schema=None) as batch_op:
        batch_op.create_index("ix_version_type_pk", ["resource_type", "pk"], unique=False)

    op.create_table(
        "idx_composite",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("first", sa.String(length=255), nullable=False),
        sa.Column("second", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["resource_pk"], ["resource.pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_composite", schema=None) as batch_op:
        batch_op.create_index("ix_idx_composite_lookup", ["param", "first", "second", "resource_type"], unique=False)
        batch_op.create_index("ix_idx_composite_resource", ["resource_pk", "param"], unique=False)

    op.create_table(
        "idx_date",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("low", sa.DateTime(), nullable=False),
        sa.Column("high", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["resource_pk"], ["resource.pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_date", schema=None) as batch_op:
        batch_op.create_index("ix_idx_date_resource", ["resource_pk", "param"], unique=False)

    op.create_table(
        "idx_number",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("low", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("high", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.ForeignKeyConstraint(["resource_pk"], ["resource.pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_number", schema=None) as batch_op:
        batch_op.create_index("ix_idx_number_resource", ["resource_pk", "param"], unique=False)

    op.create_table(
        "idx_quantity",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("low", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.Column("high", sa.Numeric(precision=38, scale=12), nullable=False),
        sa.ForeignKeyConstraint(["resource_pk"], ["resource.pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_quantity", schema=None) as batch_op:
        batch_op.create_index("ix_idx_quantity_resource", ["resource_pk", "param"], unique=False)

    op.create_table(
        "idx_reference",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(["resource_pk"], ["resource.pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_reference", schema=None) as batch_op:
        batch_op.create_index(
            "ix_idx_reference_lookup", ["param", "target_id", "target_type", "resource_type"], unique=False
        )
        batch_op.create_index("ix_idx_reference_resource", ["resource_pk", "param"], unique=False)

    op.create_table(
        "idx_string",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("value_norm", sa.String(length=255), nullable=False),
        sa.Column("value_exact", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["resource_pk"], ["resource.pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_string", schema=None) as batch_op:
        batch_op.create_index("ix_idx_string_lookup", ["param", "value_norm", "resource_type"], unique=False)
        batch_op.create_index("ix_idx_string_resource", ["resource_pk", "param"], unique=False)

    op.create_table(
        "idx_token",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("text", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["resource_pk"], ["resource.pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_token", schema=None) as batch_op:
        batch_op.create_index("ix_idx_token_lookup", ["param", "code", "system", "resource_type"], unique=False)
        batch_op.create_index("ix_idx_token_resource", ["resource_pk", "param"], unique=False)

    op.create_table(
        "idx_uri",
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("uri", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(["resource_pk"], ["resource.pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_uri", schema=None) as batch_op:
        batch_op.create_index("ix_idx_uri_lookup", ["param", "uri", "resource_type"], unique=False)
        batch_op.create_index("ix_idx_uri_resource", ["resource_pk", "param"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("idx_uri", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_uri_resource")
        batch_op.drop_index("ix_idx_uri_lookup")

    op.drop_table("idx_uri")
    with op.batch_alter_table("idx_token", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_token_resource")
        batch_op.drop_index("ix_idx_token_lookup")

    op.drop_table("idx_token")
    with op.batch_alter_table("idx_string", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_string_resource")
        batch_op.drop_index("ix_idx_string_lookup")

    op.drop_table("idx_string")
    with op.batch_alter_table("idx_reference", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_reference_resource")
        batch_op.drop_index("ix_idx_reference_lookup")

    op.drop_table("idx_reference")
    with op.batch_alter_table("idx_quantity", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_quantity_resource")

    op.drop_table("idx_quantity")
    with op.batch_alter_table("idx_number", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_number_resource")

    op.drop_table("idx_number")
    with op.batch_alter_table("idx_date", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_date_resource")

    op.drop_table("idx_date")
    with op.batch_alter_table("idx_composite", schema=None) as batch_op:
        batch_op.drop_index("ix_idx_composite_resource")
        batch_op.drop_index("ix_idx_composite_lookup")

    op.drop_table("idx_composite")
    with op.batch_alter_table("resource_version", schema=None) as batch_op:
        batch_op.drop_index("ix_version_type_pk")

    op.drop_table("resource_version")
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_type_updated")
        batch_op.drop_index("ix_resource_patient")

    op.drop_table("resource")
