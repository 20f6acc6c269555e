"""Alert calibration per rule and stream (core/alerts): saved now and then, so that a restart, or a replica
taking over a camera, goes on from the camera's recent scores instead of warming up again."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "alert_calibration",
        sa.Column("rule_id", sa.Text, primary_key=True),
        sa.Column("stream_id", sa.Text, primary_key=True),
        sa.Column("query_digest", sa.Text, nullable=False),  # the query vector it was calibrated for
        sa.Column("scores", sa.LargeBinary, nullable=False),  # recent ordinary scores, float32, oldest first
        sa.Column("run", sa.Integer, nullable=False),  # scores that stood out in a row
        sa.Column("quiet_until", sa.Double, nullable=False),  # the cooldown's end (chunk time)
        sa.Column("updated_at", sa.Double, nullable=False),  # when its last score came (Unix time)
    )
    op.create_index("alert_calibration_stream", "alert_calibration", ["stream_id"])
    op.create_index("alert_calibration_age", "alert_calibration", ["updated_at"])
