"""/v1/alerts: text alert rules on the embedding stream and the incidents they raise (docs/alerts.md)."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from rtvi.core.alerts.engine import AlertEngine
from rtvi.core.alerts.rules import Rule, RuleFields, RuleSpec
from rtvi.core.service import ServiceCore
from rtvi.errors import NotFound
from rtvi.http.deps import get_core
from rtvi.http.sse import sse_response

router = APIRouter(prefix="/v1/alerts", tags=["Alerts"])
_ID = re.compile(r"^[0-9a-f]{32}$")


def _alerts(core: ServiceCore = Depends(get_core)) -> AlertEngine:
    return core.alerts


def _shown(engine: AlertEngine, rule: Rule) -> dict[str, Any]:
    return {**rule.public(), "stats": engine.stats(rule.id)}


async def _stored(engine: AlertEngine, rule_id: str) -> Rule:
    rule = await asyncio.to_thread(engine.store.rule, rule_id) if _ID.match(rule_id) else None
    if rule is None:
        raise NotFound(f"No alert rule with id {rule_id[:100]}")
    return rule


@router.post("/rules")
async def create_rule(body: RuleSpec, engine: AlertEngine = Depends(_alerts)) -> dict[str, Any]:
    """A new rule; 200 with it and its `id`. Its query is embedded now (503 while the model loads)."""
    return _shown(engine, await engine.create(body))


@router.get("/rules")
async def list_rules(engine: AlertEngine = Depends(_alerts)) -> dict[str, Any]:
    rules = await asyncio.to_thread(engine.store.rules)
    return {"data": [_shown(engine, rule) for rule in rules]}


@router.get("/rules/{rule_id}")
async def get_rule(rule_id: str, engine: AlertEngine = Depends(_alerts)) -> dict[str, Any]:
    return _shown(engine, await _stored(engine, rule_id))


@router.patch("/rules/{rule_id}")
async def update_rule(
    rule_id: str, body: RuleFields, engine: AlertEngine = Depends(_alerts)
) -> dict[str, Any]:
    """Change some fields ({"paused": true} pauses it); a changed query or image is embedded again."""
    await _stored(engine, rule_id)
    return _shown(engine, await engine.update(rule_id, body))


@router.delete("/rules/{rule_id}")
async def delete_rule(rule_id: str, engine: AlertEngine = Depends(_alerts)) -> dict[str, Any]:
    """The rule stops at once; its incidents stay (they age out with RTVI_ALERT_MAX_INCIDENTS)."""
    await _stored(engine, rule_id)
    await engine.delete(rule_id)
    return {"id": rule_id, "deleted": True}


@router.get("/rules/{rule_id}/decisions")
async def rule_decisions(
    rule_id: str,
    engine: AlertEngine = Depends(_alerts),
    stream_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Why the rule fired or did not, chunk by chunk, newest first: score, threshold, outcome, and the
    VLM's answer (this replica's recent decisions)."""
    await _stored(engine, rule_id)
    return {"data": engine.decisions(rule_id, stream_id, limit)}


@router.get("/incidents")
async def list_incidents(
    engine: AlertEngine = Depends(_alerts),
    rule_id: str | None = None,
    stream_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[float | None, Query(description="Unix time: incidents created before it")] = None,
    after: Annotated[float | None, Query(description="Unix time: incidents created after it")] = None,
) -> dict[str, Any]:
    """Incidents, newest first (from every replica sharing the registry)."""
    found = await asyncio.to_thread(engine.store.incidents, rule_id, stream_id, limit, before, after)
    return {"data": found}


@router.get("/incidents/stream")
async def incident_stream(engine: AlertEngine = Depends(_alerts)) -> EventSourceResponse:
    """Server-sent events: each incident as it is raised (`data: {...}`), on this replica or, within about
    a second, on another one sharing the registry."""
    return sse_response(engine.subscribe())


@router.get("/incidents/{incident_id}")
async def get_incident(incident_id: str, engine: AlertEngine = Depends(_alerts)) -> dict[str, Any]:
    found = await asyncio.to_thread(engine.store.incident, incident_id) if _ID.match(incident_id) else None
    if found is None:
        raise NotFound(f"No incident with id {incident_id[:100]}")
    return found


@router.get("/incidents/{incident_id}/thumbnail")
async def incident_thumbnail(incident_id: str, engine: AlertEngine = Depends(_alerts)) -> Response:
    jpeg = await asyncio.to_thread(engine.thumbnail, incident_id) if _ID.match(incident_id) else None
    if jpeg is None:
        raise NotFound(f"No thumbnail for incident {incident_id[:100]}")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})
