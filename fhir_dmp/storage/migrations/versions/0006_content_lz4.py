"""resource bodies compressed with lz4 (PostgreSQL)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

A body over about 2 KB (a Binary: its document's base64 bytes) is compressed when stored. PostgreSQL's default,
pglz, spent about 13 ms per 10-document ITI-65 trying to compress random-looking base64 (measured on this
project's machine); lz4 gives up on incompressible data at once and still compresses JSON. A server built
without lz4, or older than 14, stores large bodies uncompressed instead (`STORAGE EXTERNAL`). Rows already
stored keep their compression. SQLite: nothing to do.
"""

from alembic import op
from sqlalchemy import text

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if int(bind.execute(text("SHOW server_version_num")).scalar_one()) >= 140000:
        try:
            with bind.begin_nested():
                bind.execute(text("ALTER TABLE resource_version ALTER COLUMN content SET COMPRESSION lz4"))
            return
        except Exception:  # noqa: BLE001, S110 - built without lz4: uncompressed below
            pass
    bind.execute(text("ALTER TABLE resource_version ALTER COLUMN content SET STORAGE EXTERNAL"))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if int(bind.execute(text("SHOW server_version_num")).scalar_one()) >= 140000:
        bind.execute(text("ALTER TABLE resource_version ALTER COLUMN content SET COMPRESSION DEFAULT"))
    bind.execute(text("ALTER TABLE resource_version ALTER COLUMN content SET STORAGE EXTENDED"))
