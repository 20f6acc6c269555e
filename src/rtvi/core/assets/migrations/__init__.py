"""Versioned schema migrations of the asset registry (Alembic), run at start-up by `upgrade`.

Add a migration as `versions/NNNN_what.py` with `revision = "NNNN"` and `down_revision` the previous
one; it runs on SQLite and PostgreSQL alike, so use `op` and SQLAlchemy types, never dialect SQL.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

_HERE = Path(__file__).parent
# Any constant: replicas starting together take turns to migrate a shared PostgreSQL database.
_PG_MIGRATION_LOCK = 0x72747669


def upgrade(connection: Connection) -> None:
    """Bring the database to the newest schema inside one transaction."""
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = connection
    with connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        command.upgrade(config, "head")
