"""Alert rules and incidents in the asset registry's database (SQLite, or the PostgreSQL replicas share),
tables made by migration 0002. Webhook secrets and MQTT URLs (which may hold a password) are sealed with
the registry's key, as camera passwords are. Blocking: call it off the event loop."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from rtvi.core.alerts.rules import Rule, RuleSpec
from rtvi.core.assets.secrets import SecretBox

log = logging.getLogger(__name__)

_metadata = sa.MetaData()
_rules = sa.Table(
    "alert_rules",
    _metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("vector", sa.LargeBinary),
    sa.Column("vector_model", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)
_incidents = sa.Table(
    "alert_incidents",
    _metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("rule_id", sa.Text, nullable=False),
    sa.Column("stream_id", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)
_calibration = sa.Table(
    "alert_calibration",
    _metadata,
    sa.Column("rule_id", sa.Text, primary_key=True),
    sa.Column("stream_id", sa.Text, primary_key=True),
    sa.Column("query_digest", sa.Text, nullable=False),
    sa.Column("scores", sa.LargeBinary, nullable=False),
    sa.Column("run", sa.Integer, nullable=False),
    sa.Column("quiet_until", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)
# Calibration rows not updated for this long are removed (their stream or rule is gone).
CALIBRATION_KEPT_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class SavedCalibration:
    """One rule on one stream, as saved (core/alerts/engine.py's _PairState, without the live parts)."""

    rule_id: str
    stream_id: str
    query_digest: str
    scores: npt.NDArray[np.float32]  # oldest first
    run: int
    quiet_until: float
    updated_at: float


# What an action's fields may hide: a webhook URL often carries its token (Slack, Teams), an MQTT URL
# a password, a secret is one.
_SEALED = {"webhook": ("url", "secret"), "mqtt": ("url",)}
# Incidents removed per statement when the table is over RTVI_ALERT_MAX_INCIDENTS.
_TRIM_BATCH = 1000


class AlertStore:
    def __init__(self, engine: sa.Engine, secrets: SecretBox | None, max_incidents: int) -> None:
        self._engine = engine
        self._secrets = secrets
        self.max_incidents = max_incidents

    # --- rules ------------------------------------------------------------------------------------
    def rules(self) -> list[Rule]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(_rules).order_by(_rules.c.created_at)).all()
        rules = []
        for row in rows:
            try:
                rules.append(self._rule(row))
            except ValueError as exc:  # a rule that no longer opens (RTVI_SECRET_KEY changed?) is skipped
                log.warning("alert rule %s cannot be read, skipped: %s", row.id, exc)
        return rules

    def version(self) -> tuple[int, float]:
        """(how many rules, the sum of their change times): a cheap check whether the rules must be read
        again. A sum, not the latest: any rule's change moves it, whatever the clocks of the replicas."""
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(_rules.c.updated_at), 0.0))
        with self._engine.connect() as conn:
            count, latest = conn.execute(query).one()
        return int(count), float(latest)

    def rule(self, rule_id: str) -> Rule | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(_rules).where(_rules.c.id == rule_id)).first()
        return self._rule(row) if row is not None else None

    def add_rule(self, spec: RuleSpec, vector: npt.NDArray[np.float32], model_id: str) -> Rule:
        now = time.time()
        rule = Rule(uuid.uuid4().hex, spec, vector, model_id, now, now)
        with self._engine.begin() as conn:
            conn.execute(sa.insert(_rules).values(**self._row(rule)))
        return rule

    def replace_rule(self, rule: Rule) -> Rule | None:
        """Store `rule` as the new state of its id; None when it was deleted meanwhile."""
        with self._engine.begin() as conn:
            row = self._row(rule)
            done = conn.execute(sa.update(_rules).where(_rules.c.id == rule.id).values(**row))
        return rule if done.rowcount else None

    def set_vector(self, rule_id: str, vector: npt.NDArray[np.float32], model_id: str) -> None:
        """The rule's query embedded by another model; nothing else of the rule changes."""
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(_rules)
                .where(_rules.c.id == rule_id)
                .values(vector=vector.astype(np.float32).tobytes(), vector_model=model_id)
            )

    def delete_rule(self, rule_id: str) -> bool:
        with self._engine.begin() as conn:
            conn.execute(sa.delete(_calibration).where(_calibration.c.rule_id == rule_id))
            return bool(conn.execute(sa.delete(_rules).where(_rules.c.id == rule_id)).rowcount)

    # --- calibration ------------------------------------------------------------------------------
    def save_calibration(self, states: list[SavedCalibration]) -> None:
        """Insert or replace these rows (one transaction), and drop rows nobody updated for a week."""
        if not states:
            return
        rows = [
            {
                "rule_id": c.rule_id,
                "stream_id": c.stream_id,
                "query_digest": c.query_digest,
                "scores": np.asarray(c.scores, dtype=np.float32).tobytes(),
                "run": c.run,
                "quiet_until": c.quiet_until if np.isfinite(c.quiet_until) else 0.0,
                "updated_at": c.updated_at,
            }
            for c in states
        ]
        # An upsert: two replicas may save the same pair around a hand-over.
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(_calibration)
        upsert = insert.on_conflict_do_update(
            index_elements=["rule_id", "stream_id"],
            set_={k: insert.excluded[k] for k in rows[0] if k not in ("rule_id", "stream_id")},
        )
        with self._engine.begin() as conn:
            conn.execute(upsert, rows)
            stale = _calibration.c.updated_at < time.time() - CALIBRATION_KEPT_S
            conn.execute(sa.delete(_calibration).where(stale))

    def calibration(self, stream_id: str) -> list[SavedCalibration]:
        """What was saved for a stream, every rule."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(_calibration).where(_calibration.c.stream_id == stream_id)).all()
        return [
            SavedCalibration(
                r.rule_id,
                r.stream_id,
                r.query_digest,
                np.frombuffer(r.scores, dtype=np.float32).copy(),
                r.run,
                r.quiet_until,
                r.updated_at,
            )
            for r in rows
        ]

    def _row(self, rule: Rule) -> dict[str, Any]:
        return {
            "id": rule.id,
            "name": rule.spec.name,
            "spec": json.dumps(self._sealed(rule.spec.model_dump(), self._seal)),
            "vector": None if rule.vector is None else rule.vector.astype(np.float32).tobytes(),
            "vector_model": rule.vector_model,
            "created_at": rule.created_at,
            "updated_at": rule.updated_at,
        }

    def _rule(self, row: sa.Row[Any]) -> Rule:
        spec = RuleSpec.model_validate(self._sealed(json.loads(row.spec), self._open))
        vector = None if row.vector is None else np.frombuffer(row.vector, dtype=np.float32).copy()
        return Rule(row.id, spec, vector, row.vector_model, row.created_at, row.updated_at)

    def _seal(self, value: str) -> str:
        return self._secrets.seal(value) if self._secrets is not None else value

    def _open(self, value: str) -> str:
        return self._secrets.open(value) if self._secrets is not None else value

    @staticmethod
    def _sealed(spec: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
        for action in spec.get("actions") or []:
            for key in _SEALED.get(action["type"], ()):
                if action.get(key):
                    action[key] = fn(action[key])
        return spec

    # --- incidents --------------------------------------------------------------------------------
    def add_incident(self, incident: dict[str, Any]) -> list[str]:
        """Keep `incident` (its "id", "rule_id", "stream_id", "created_at" are columns too); -> the ids of
        the oldest incidents removed to stay within max_incidents (their thumbnails go with them)."""
        with self._engine.begin() as conn:  # the incident first, on its own: trimming must not cost it
            conn.execute(
                sa.insert(_incidents).values(
                    id=incident["id"],
                    rule_id=incident["rule_id"],
                    stream_id=incident["stream_id"],
                    created_at=incident["created_at_unix"],
                    body=json.dumps(incident),
                )
            )
        try:
            with self._engine.begin() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(_incidents)).scalar_one()
                excess = min(count - self.max_incidents, _TRIM_BATCH)
                if excess <= 0:
                    return []
                oldest = sa.select(_incidents.c.id).order_by(_incidents.c.created_at).limit(excess)
                removed = list(conn.execute(oldest).scalars())
                conn.execute(sa.delete(_incidents).where(_incidents.c.id.in_(removed)))
        except sa.exc.SQLAlchemyError as exc:  # another replica trimming the same rows: its turn
            log.warning("alert incidents: trimming failed, next time: %s", type(exc).__name__)
            return []
        return removed

    def incidents(
        self,
        rule_id: str | None = None,
        stream_id: str | None = None,
        limit: int = 100,
        before: float | None = None,
        after: float | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; `before` / `after`: only incidents created before / after that Unix time (paging,
        following)."""
        query = sa.select(_incidents.c.body).order_by(_incidents.c.created_at.desc()).limit(limit)
        if rule_id is not None:
            query = query.where(_incidents.c.rule_id == rule_id)
        if stream_id is not None:
            query = query.where(_incidents.c.stream_id == stream_id)
        if before is not None:
            query = query.where(_incidents.c.created_at < before)
        if after is not None:
            query = query.where(_incidents.c.created_at > after)
        with self._engine.connect() as conn:
            return [json.loads(body) for body in conn.execute(query).scalars()]

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            body = conn.execute(sa.select(_incidents.c.body).where(_incidents.c.id == incident_id)).scalar()
        return json.loads(body) if body is not None else None
