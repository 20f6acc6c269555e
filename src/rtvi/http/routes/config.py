"""POST /v1/config (and the hidden /api/v1/config): switch the message bus and topics at runtime (spec §6.1).

Connection settings stay as configured at start-up; messages already queued may
still go to the old route."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rtvi.core.service import ServiceCore
from rtvi.errors import InvalidParameters, Unavailable
from rtvi.http.deps import get_core

router = APIRouter(tags=["Configuration"])
Bus = Literal["kafka", "redis"]


class ConfigMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    messagingbus: Bus
    topic_prefix: str = Field(alias="topic-prefix", min_length=1, max_length=249)
    errorbus: Bus | None = None
    error_topic_prefix: str | None = Field(None, alias="error-topic-prefix", min_length=1, max_length=249)
    create_topic: bool = Field(False, alias="create-topic")
    topic_partition: int = Field(1, alias="topic-partition", ge=1, le=100000)


class ConfigEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    change: str
    metadata: ConfigMetadata


class ConfigRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alert_type: str
    created_at: str = ""
    txn_id: str = ""
    source: str = ""
    event: ConfigEvent


async def _configure(body: ConfigRequest, core: ServiceCore) -> JSONResponse:
    if body.alert_type != "config":
        raise InvalidParameters(f"alert_type must be 'config', got '{body.alert_type}'", "BadRequest")
    if body.event.change != "config":
        raise InvalidParameters(f"event.change must be 'config', got '{body.event.change}'", "BadRequest")
    publisher = core.publisher
    if publisher is None:
        raise Unavailable("The message bus is not initialised yet")
    md = body.event.metadata
    warnings = publisher.configure(md.messagingbus, md.topic_prefix, md.errorbus, md.error_topic_prefix)
    if md.create_topic:
        if md.messagingbus == "kafka":
            warning = await asyncio.to_thread(publisher.create_topic, md.topic_prefix, md.topic_partition)
            if warning:
                warnings.append(warning)
        else:
            warnings.append("create-topic applies to Kafka only; Redis streams are created on first write")
    out: dict[str, Any] = {
        "txn_id": body.txn_id,
        "status": "updated",
        "messagingbus": md.messagingbus,
        "topic": md.topic_prefix,
        "source": body.source,
        "created_at": body.created_at,
    }
    if md.errorbus is not None or md.error_topic_prefix is not None:
        out |= {"errorbus": publisher.error_bus, "error_topic": publisher.error_topic}
    if warnings:
        out["warnings"] = warnings
    return JSONResponse(out)


@router.post("/v1/config")
async def config(body: ConfigRequest, core: ServiceCore = Depends(get_core)) -> JSONResponse:
    """Switch the active message bus and topic (and optionally the error bus and topic)."""
    return await _configure(body, core)


@router.post("/api/v1/config", include_in_schema=False)
async def config_alias(body: ConfigRequest, core: ServiceCore = Depends(get_core)) -> JSONResponse:
    return await _configure(body, core)
