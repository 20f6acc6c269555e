"""The assets and evicted tables. Databases made before migrations existed already have them: kept.

The columns are written out here, not taken from registry.py: a migration is a frozen step, and the
registry's tables describe only the newest schema (they change with later migrations, this must not)."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    existing = sa.inspect(op.get_bind()).get_table_names()
    if "assets" not in existing:
        op.create_table(
            "assets",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("media_type", sa.Text, nullable=False),
            sa.Column("filename", sa.Text, nullable=False),
            sa.Column("path", sa.Text, nullable=False),
            sa.Column("owns_dir", sa.Boolean, nullable=False),
            sa.Column("bytes", sa.BigInteger, nullable=False),
            sa.Column("creation_time", sa.Text),
            sa.Column("sensor_name", sa.Text, nullable=False),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Column("meta", sa.Text, nullable=False),
        )
    if "evicted" not in existing:
        op.create_table(
            "evicted",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("evicted_at", sa.Double, nullable=False),
        )
