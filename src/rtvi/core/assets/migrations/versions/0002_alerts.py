"""The alert rules and their incidents (core/alerts): in the registry's database, so that replicas sharing a
PostgreSQL registry share the rules."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),  # the rule as JSON, its secrets sealed
        sa.Column("vector", sa.LargeBinary),  # the query's embedding (float32), in `vector_model`'s space
        sa.Column("vector_model", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "alert_incidents",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("rule_id", sa.Text, nullable=False),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),  # the order they are listed and trimmed in
        sa.Column("body", sa.Text, nullable=False),  # the incident as the API shows it (JSON)
    )
    op.create_index("alert_incidents_age", "alert_incidents", ["created_at"])
    op.create_index("alert_incidents_rule", "alert_incidents", ["rule_id", "created_at"])
    op.create_index("alert_incidents_stream", "alert_incidents", ["stream_id", "created_at"])
