"""The VLM service's bus messages: nv.VisionLLM with the caption (spec §6.3) and, when the chunk raises an
alert, nv.Incident (spec §6.4). Both carry the same key, `{request_id}:{chunk_idx}`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.core.alerts.gate import GateDecision
from rtvi.core.bus.incidents import AnalyticsModule, Place, fill_place
from rtvi.core.bus.messages import ChunkContext, vision_llm_envelope
from rtvi.core.bus.schema import ext_pb2
from rtvi.core.bus.schema import schema_pb2 as nv
from rtvi.services.vlm.answers import Answer

__all__ = ["AnalyticsModule", "Caption", "CaptionTask", "Place", "build_incident", "build_vision_llm"]

DEFAULT_ALERT_CATEGORY = "vlm-alert"


@dataclass(frozen=True, slots=True)
class CaptionTask:
    """What one caption request asks, shared by all its chunks, and where its incidents are placed."""

    prompt: str
    system_prompt: str
    place: Place
    module: AnalyticsModule
    enable_reasoning: bool = False
    alert_category: str | None = None
    object_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Caption:
    """One chunk's output: the answer read (see answers.py), its token counts, its request."""

    task: CaptionTask
    answer: Answer
    input_tokens: int
    output_tokens: int
    error: str = ""  # the model call failed (live streams go on; the chunk reports it)
    gate: GateDecision | None = None  # the request's alert_gate: whether the VLM was called


def _info(caption: Caption) -> dict[str, str]:
    a = caption.answer
    info = {
        "incidentDetected": "true" if a.alert else "false",
        "inputTokens": str(caption.input_tokens),
        "outputTokens": str(caption.output_tokens),
    }
    if a.reasoning and caption.task.enable_reasoning:
        info["reasoning"] = info["reasoningDescription"] = a.reasoning
    if a.format_error:
        info["responseFormatError"] = a.format_error
    if caption.error:
        info["error"] = caption.error
    if caption.gate is not None:
        info["alertGate"] = "passed" if caption.gate.passed else "skipped"
        info["alertGateScore"] = f"{caption.gate.score:.4f}"
    return info


def build_vision_llm(ctx: ChunkContext, caption: Caption) -> nv.VisionLLM:
    msg, query = vision_llm_envelope(ctx)
    query.response = caption.answer.content
    query.prompts["user"] = caption.task.prompt
    query.prompts["system"] = caption.task.system_prompt
    msg.llm.info["enableReasoning"] = "true" if caption.task.enable_reasoning else "false"
    msg.info.update(_info(caption))
    return msg


def read_vision_llm(msg: nv.VisionLLM) -> Caption:
    """A chunk's caption read back from its nv.VisionLLM (the results feed: SSE from any replica). The
    message does not carry where incidents are placed: a reader renders captions, not incidents."""
    query, info = msg.llm.queries[0], msg.info
    task = CaptionTask(
        prompt=query.prompts["user"],
        system_prompt=query.prompts["system"],
        place=Place("", "", 0.0, 0.0, 0.0, 0.0, 0.0),
        module=AnalyticsModule("", "", ""),
        enable_reasoning=msg.llm.info["enableReasoning"] == "true",
    )
    answer = Answer(
        content=query.response,
        reasoning=info.get("reasoning", ""),
        format_error=info.get("responseFormatError", ""),
        alert=info.get("incidentDetected") == "true",
        trigger="",
    )
    return Caption(
        task=task,
        answer=answer,
        input_tokens=int(info.get("inputTokens") or 0),
        output_tokens=int(info.get("outputTokens") or 0),
        error=info.get("error", ""),
    )


def build_incident(ctx: ChunkContext, caption: Caption, vision: nv.VisionLLM) -> ext_pb2.Incident | None:
    """The nv.Incident of an alerting chunk (spec §6.4), else None; times, frame ids and llm are those of
    the chunk's VisionLLM message."""
    if not caption.answer.alert:
        return None
    task = caption.task
    category = task.alert_category or DEFAULT_ALERT_CATEGORY
    incident = ext_pb2.Incident(sensorId=ctx.sensor_key, category=category, isAnomaly=True)
    incident.timestamp.CopyFrom(vision.timestamp)
    incident.end.CopyFrom(vision.end)
    incident.frameIds.extend([vision.startFrameId, vision.endFrameId])
    incident.objectIds.extend(task.object_ids or (ctx.stream_id,))
    fill_place(incident, task.place, task.module, ctx.model_id)
    module = incident.analyticsModule
    stream_type = "live" if ctx.sensor_type == "Camera" else "file"
    module.info.update(
        {"requestId": ctx.request_id, "chunkIdx": str(ctx.chunk_idx), "streamType": stream_type}
    )
    incident.llm.CopyFrom(vision.llm)
    incident.info.update(
        {
            "requestId": ctx.request_id,
            "chunkIdx": str(ctx.chunk_idx),
            "streamId": ctx.stream_id,
            "sensorId": ctx.sensor_key,
            "prompt": task.prompt,
            "systemPrompt": task.system_prompt,
            "requestedModel": ctx.requested_model,
            "alertCategory": category,
            "triggerPhrase": caption.answer.trigger,
            "verdict": "confirmed",
            # The reference example's snake_case keys, next to the camelCase ones above (both kept).
            "request_id": ctx.request_id,
            "chunk_idx": str(ctx.chunk_idx),
            "incident_detected": "true",
            "priority": task.module.priority,
        }
    )
    if caption.answer.reasoning and task.enable_reasoning:
        incident.info["reasoning"] = incident.info["reasoningDescription"] = caption.answer.reasoning
    return incident
