"""The VLM service's logic: caption requests (files, images, live streams), CV auto-started captioning
and chat, over the shared pipeline; routes render what it returns.

A caption request gets its own CaptionProcessor (its key names the request), so several requests on one
live stream are separate jobs that share the stream's one decoder (spec §4.7). Every chunk's answer is
read once (answers.read_answer): reasoning split off, format checked, alert decided; the bus messages,
the JSON / SSE items and the metrics all use that reading.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Histogram

from rtvi.core.alerts.gate import EmbeddingGate
from rtvi.core.assets.registry import Asset
from rtvi.core.media.types import Frame
from rtvi.core.models.bundled import BundledEmbedder, load_bundled
from rtvi.core.models.info import ModelInfo
from rtvi.core.models.text_encoder import SentenceEncoder
from rtvi.core.pipeline.generation import (
    GenerationJob,
    GenerationTarget,
    Tally,
    chunk_timings,
    open_generation,
    plan_of,
)
from rtvi.core.pipeline.results import ChunkResult, FrameSampling
from rtvi.core.service import ServiceCore
from rtvi.errors import InvalidParameters, MalformedRequest, RtviError
from rtvi.services.vlm.answers import check_schema, read_answer
from rtvi.services.vlm.messages import AnalyticsModule, Caption, CaptionTask, Place
from rtvi.services.vlm.models.base import (
    Generation,
    OutputFormat,
    SamplingParams,
    Turn,
    VisionLanguageModel,
    generate,
)
from rtvi.services.vlm.models.offline import OfflineLabelModel
from rtvi.services.vlm.protocol import (
    AlertGate,
    CaptionChunk,
    CaptionsUsage,
    FrameOptions,
    ResponseFormat,
    VlmQuery,
    VlmStreamMetadata,
)
from rtvi.settings import VlmSettings

log = logging.getLogger(__name__)

CAPTIONS_FAILED = "Failed to generate captions."
# Captions are searched by their text's embedding: one collection whatever VLM wrote them.
CAPTION_COLLECTION = "captions-all-minilm-l6-v2"
API_TYPE = "vlm"
MAX_FRAMES_PER_CHUNK = 512  # -1 ("all frames") of a long chunk is capped here
DEFAULT_VIDEO_FPS = 30.0  # for "all frames" when the stream's rate is unknown


class VlmMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.input_tokens = Histogram(
            "vlm_input_tokens_per_chunk", "Prompt tokens per chunk", registry=r, buckets=_TOKEN_BUCKETS
        )
        self.output_tokens = Histogram(
            "vlm_output_tokens_per_chunk", "Generated tokens per chunk", registry=r, buckets=_TOKEN_BUCKETS
        )
        self.incidents = Counter("rtvi_incidents", "Chunks whose answer raised an alert", registry=r)
        self.format_errors = Counter(
            "rtvi_response_format_errors", "Answers that broke the requested response_format", registry=r
        )
        self.requests = Counter("rtvi_vlm_requests", "VLM requests accepted", ["route"], registry=r)
        self.gate = Counter(
            "rtvi_vlm_alert_gate_chunks",
            "Chunks of requests with alert_gate: passed (the VLM was called) or skipped (a call saved)",
            ["outcome"],
            registry=r,
        )


_TOKEN_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


@dataclass(frozen=True, slots=True)
class CaptionProcessor:
    """A request's chunk processor: the chunk's frames + the request's generation -> a read Caption."""

    serving: VlmServing
    key: str
    sampling: FrameSampling
    task: CaptionTask
    generation: Generation  # everything but the frames
    keep_going: bool = False  # live: a failed model call is reported in its chunk, the stream goes on
    gate: EmbeddingGate | None = None  # the request's alert_gate: the VLM only on chunks that stand out

    async def process(self, frames: Sequence[Frame], audio: bytes | None = None) -> tuple[Caption, float]:
        gate = None
        if self.gate is not None:
            gate = await self.gate.admits(frames)
            self.serving.metrics.gate.labels("passed" if gate.passed else "skipped").inc()
            if not gate.passed:
                return Caption(self.task, read_answer("", OutputFormat()), 0, 0, gate=gate), 0.0
        g = replace(self.generation, frames=list(frames), audio=audio)
        start = time.perf_counter()
        try:
            out = await generate(self.serving.vlm, g)
        except RtviError as exc:
            if not self.keep_going:
                raise
            log.warning("caption failed on a live chunk (%s): %s", self.key, exc.message)
            empty = read_answer("", OutputFormat())
            return Caption(self.task, empty, 0, 0, error=exc.message, gate=gate), time.perf_counter() - start
        elapsed = time.perf_counter() - start
        answer = read_answer(out.text, g.output_format)
        self.serving.observe(
            elapsed, out.input_tokens, out.output_tokens, answer.alert, bool(answer.format_error)
        )
        return Caption(self.task, answer, out.input_tokens, out.output_tokens, gate=gate), elapsed


def output_format(rf: ResponseFormat) -> OutputFormat:
    """The request's response_format for the model; an unusable JSON schema is a 422."""
    if rf.type == "json_schema" and rf.json_schema is not None:
        try:
            check_schema(rf.json_schema.schema_)
        except Exception as exc:
            raise MalformedRequest(
                f"response_format.json_schema.schema is not a valid JSON schema: {exc}"
            ) from None
        return OutputFormat("json_schema", rf.json_schema.schema_, rf.json_schema.name)
    if rf.type == "choice":
        return OutputFormat("choice", choices=tuple(rf.choices or ()))
    return OutputFormat(rf.type)


class VlmServing:
    def __init__(
        self,
        core: ServiceCore,
        settings: VlmSettings,
        vlm: VisionLanguageModel,
        captions: SentenceEncoder | None = None,
    ) -> None:
        self.core = core
        self.vlm = vlm
        self.captions = captions  # embeds captions for the search index (None: no index)
        self.settings = settings
        self.metrics = VlmMetrics(core.metrics.registry)
        self.audio_support = self.settings.vlm_supports_audio and vlm.accepts_audio
        if self.settings.vlm_supports_audio and not vlm.accepts_audio:
            log.warning("VLM_MODEL_SUPPORTS_AUDIO is set, but the %s backend cannot pass audio", vlm.owned_by)
        self.model = ModelInfo(
            id=vlm.id,
            owned_by=vlm.owned_by,
            api_type=API_TYPE,
            details={
                "language_model": vlm.is_language_model,
                "audio_support": self.audio_support,
            },
        )
        self.rendering = CaptionRendering(vlm.id)
        self.module = AnalyticsModule.of(self.settings)
        self._gate_model: BundledEmbedder | None = None  # alert_gate's model, loaded on first use
        self._gate_lock = asyncio.Lock()

    # --- ModelStage ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self.captions is not None:
            await self.core.indexing.open(
                CAPTION_COLLECTION, self.captions.dim, _indexed, self.query_vector, self.captions.encode
            )

    async def query_vector(self, text: str | None, image: str | None) -> npt.NDArray[np.float32]:
        """A search query: captions are text, so only a text can be compared with them."""
        if image is not None or self.captions is None:
            raise InvalidParameters("This service indexes captions: search them with a text query")
        return (await asyncio.to_thread(self.captions.encode, [text or ""]))[0]

    async def stop(self) -> None:
        await self.vlm.close()

    def live_processor(self, asset: Asset, metadata: VlmStreamMetadata) -> CaptionProcessor | None:
        """CV metadata.prompt starts captioning (spec §3.4); the other metadata fields shape it."""
        if metadata.prompt is None:
            return None
        if metadata.model is not None:
            self.check_model(metadata.model)
        return self.processor(
            metadata.frame_options(),
            asset=asset,
            chunk_length_s=float(metadata.chunk_duration),
            prompt=metadata.prompt,
            system_prompt=metadata.system_prompt,
            response_format=ResponseFormat(type=metadata.response_format_type or "text"),
            alert_category=metadata.alert_category,
            key=f"vlm:cv:{asset.id}",
        )

    # --- model calls --------------------------------------------------------------------------
    def observe(
        self, latency_s: float, tokens_in: int, tokens_out: int, alert: bool, format_error: bool
    ) -> None:
        m = self.metrics
        self.core.metrics.model_latency.observe(latency_s)
        m.input_tokens.observe(tokens_in)
        m.output_tokens.observe(tokens_out)
        if alert:
            m.incidents.inc()
        if format_error:
            m.format_errors.inc()

    # --- validation ---------------------------------------------------------------------------
    def check_model(self, requested: str, api_type: str = "") -> None:
        if requested != self.vlm.id:
            raise InvalidParameters.no_such_model(requested, self.vlm.id)
        if api_type and api_type != API_TYPE:
            raise InvalidParameters(f"api_type '{api_type}' does not match the model's api_type '{API_TYPE}'")

    def check_prompts(self, prompt: str, system_prompt: str | None) -> None:
        s = self.settings
        if not prompt.strip():
            raise MalformedRequest("prompt must not be empty")
        if len(prompt) > s.vlm_prompt_max_length:
            raise MalformedRequest(
                f"prompt is {len(prompt)} characters; the limit is {s.vlm_prompt_max_length} "
                "(VLM_PROMPT_MAX_LENGTH)"
            )
        if system_prompt is not None and len(system_prompt) > s.vlm_system_prompt_max_length:
            raise MalformedRequest(
                f"system_prompt is {len(system_prompt)} characters; the limit is "
                f"{s.vlm_system_prompt_max_length} (VLM_SYSTEM_PROMPT_MAX_LENGTH)"
            )

    def check_options(self, options: FrameOptions, *extra_tokens: int | None) -> None:
        cap = self.settings.vlm_max_generation_tokens
        for name, value in (
            ("max_tokens", options.max_tokens),
            ("min_tokens", options.min_tokens),
            *(("max_completion_tokens", t) for t in extra_tokens),
        ):
            if value is not None and value > cap:
                raise MalformedRequest(f"{name} is {value}; the limit is {cap} (VLM_MAX_GENERATION_TOKENS)")
        if options.enable_audio and not self.audio_support:
            raise InvalidParameters(
                "enable_audio: this model does not support audio (VLM_MODEL_SUPPORTS_AUDIO)"
            )
        if (options.vlm_input_width > 0) != (options.vlm_input_height > 0):
            raise InvalidParameters("vlm_input_width and vlm_input_height are set together (or both 0)")

    # --- requests -----------------------------------------------------------------------------
    async def caption_request(self, query: VlmQuery) -> GenerationJob[Caption]:
        """Validate and start a generate_captions request (errors before any response starts)."""
        self.check_model(query.model, query.api_type)
        self.check_prompts(query.prompt, query.system_prompt)
        self.check_options(query)
        plan = plan_of(query, CAPTIONS_FAILED)
        gate = await self.alert_gate(query.alert_gate) if query.alert_gate is not None else None

        def make(req: GenerationTarget) -> CaptionProcessor:
            processor = self.processor(
                query,
                asset=req.asset,
                chunk_length_s=query.chunk_duration,
                prompt=query.prompt,
                system_prompt=query.system_prompt,
                response_format=query.response_format,
                alert_category=query.alert_category,
                object_ids=tuple(query.ids),
                key=f"vlm:{req.request_id}",
                keep_going=req.is_live,
            )
            return replace(processor, gate=gate()) if gate is not None else processor

        job = await open_generation(self.core, plan, make)
        self.metrics.requests.labels("generate_captions").inc()  # accepted: counted once it started
        return job

    async def alert_gate(self, request: AlertGate) -> Callable[[], EmbeddingGate]:
        """A maker of the request's gate (each processor gets its own score history): the rule's or the
        request's query, embedded by the bundled image-text model."""
        sensitivity, min_score, text = request.sensitivity, request.min_score, request.query
        if request.rule_id is not None:
            rule = await asyncio.to_thread(self.core.alerts.store.rule, request.rule_id)
            if rule is None:
                raise InvalidParameters(f"alert_gate: no alert rule with id {request.rule_id}")
            if not rule.spec.query:
                raise InvalidParameters(
                    "alert_gate: the rule has no query text (a picture alone cannot gate)"
                )
            sensitivity, min_score, text = rule.spec.sensitivity, rule.spec.min_score, rule.spec.query
        embedder = await self._gate_embedder()
        query = (await asyncio.to_thread(embedder.embed_texts, [text or ""]))[0]
        s = self.core.settings.alerts

        def make() -> EmbeddingGate:
            return EmbeddingGate(
                lambda frames: embedder.embed_frames([frames])[0],
                query,
                sensitivity=sensitivity,
                min_score=min_score,
                match_floor=embedder.match_floor,
                window=s.alert_calibration_window,
                warmup=s.alert_warmup_chunks,
            )

        return make

    async def _gate_embedder(self) -> BundledEmbedder:
        """The bundled image-text model: the offline backend's own, else loaded on first use."""
        if isinstance(self.vlm, OfflineLabelModel):
            return self.vlm.embedder
        async with self._gate_lock:
            if self._gate_model is None:
                log.info("alert_gate: loading the bundled image-text model for the gate")
                self._gate_model = await asyncio.to_thread(load_bundled, self.core.settings.model)
            return self._gate_model

    def processor(
        self,
        options: FrameOptions,
        *,
        asset: Asset,
        chunk_length_s: float,
        prompt: str,
        system_prompt: str | None,
        response_format: ResponseFormat,
        key: str,
        alert_category: str | None = None,
        object_ids: tuple[str, ...] = (),
        keep_going: bool = False,
        history: Sequence[Turn] = (),
        max_tokens: int | None = None,
        stop: tuple[str, ...] = (),
    ) -> CaptionProcessor:
        if options.enable_audio and asset.is_live:
            raise InvalidParameters("enable_audio: live streams are captioned from their video only")
        generation = self.generation(
            options, prompt, system_prompt, response_format, history, max_tokens, stop
        )
        task = CaptionTask(
            prompt=prompt,
            system_prompt=generation.system_prompt,
            place=Place.of(asset.meta, self.settings),
            module=self.module,
            enable_reasoning=options.enable_reasoning,
            alert_category=alert_category,
            object_ids=object_ids,
        )
        return CaptionProcessor(
            self, key, self.frame_sampling(options, asset, chunk_length_s), task, generation, keep_going
        )

    def generation(
        self,
        options: FrameOptions,
        prompt: str,
        system_prompt: str | None,
        response_format: ResponseFormat,
        history: Sequence[Turn] = (),
        max_tokens: int | None = None,
        stop: tuple[str, ...] = (),
    ) -> Generation:
        """One model call's inputs (the system prompt defaults to VLM_SYSTEM_PROMPT)."""
        return Generation(
            prompt=prompt,
            system_prompt=self.settings.vlm_system_prompt if system_prompt is None else system_prompt,
            sampling=sampling_params(options, max_tokens, stop),
            output_format=output_format(response_format),
            enable_reasoning=options.enable_reasoning,
            history=tuple(history),
        )

    def frame_sampling(self, options: FrameOptions, asset: Asset, chunk_length_s: float) -> FrameSampling:
        """Frames per chunk (spec §5.4): a fixed count, or a rate times the chunk's length; -1 = every
        frame; media_io_kwargs.video overrides the two fields."""
        length = chunk_length_s or float(asset.meta.get("duration_s") or 0)
        video_fps = float(asset.meta.get("fps") or DEFAULT_VIDEO_FPS)
        value, per_second = options.num_frames_per_second_or_fixed_frames_chunk, options.use_fps_for_chunking
        io = options.media_io_kwargs.video if options.media_io_kwargs else None
        if io is not None and io.fps is not None:
            value, per_second = io.fps, True
        elif io is not None and io.num_frames is not None:
            value, per_second = io.num_frames, False
        if value == 0:
            value = self.settings.vlm_default_frames
        if value == -1:
            frames = math.ceil(video_fps * length) if length else MAX_FRAMES_PER_CHUNK
        elif per_second:
            frames = math.ceil(value * length) if length else math.ceil(value)
        else:
            frames = round(value)
        # The request's size, else VLM_INPUT_WIDTH x VLM_INPUT_HEIGHT (both set, or as sampled).
        width, height = options.vlm_input_width, options.vlm_input_height
        if not width and self.settings.vlm_input_width and self.settings.vlm_input_height:
            width, height = self.settings.vlm_input_width, self.settings.vlm_input_height
        size = (width, height) if width else None
        return FrameSampling(
            max(1, min(frames, MAX_FRAMES_PER_CHUNK)), size, self.vlm.early, audio=options.enable_audio
        )


def sampling_params(
    o: FrameOptions, max_tokens: int | None = None, stop: Sequence[str] = ()
) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens or o.max_tokens,
        min_tokens=o.min_tokens,
        temperature=o.temperature,
        top_p=o.top_p,
        top_k=o.top_k,
        seed=o.seed,
        ignore_eos=o.ignore_eos,
        stop=tuple(stop),
    )


def _indexed(caption: Caption) -> tuple[None, str | None]:
    """What the search index keeps of a chunk: its caption (the index embeds it); not a failed chunk."""
    text = caption.answer.content.strip()
    return None, (text[:4000] if text and not caption.error else None)


class CaptionRendering:
    """The VLM service's chunk items and usage (spec §4.7): null fields omitted, usage only at the end."""

    usage_on_every_event = False
    exclude_none = True

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def chunk(self, req: GenerationJob[Caption], r: ChunkResult[Caption]) -> CaptionChunk:
        c = r.output
        a = c.answer
        return CaptionChunk(
            chunk_id=r.index,
            start_time=req.time(r.start_s),
            end_time=req.time(r.end_s),
            content=a.content[:100_000],
            reasoning_description=a.reasoning if c.task.enable_reasoning else "",
            response_format_error=a.format_error or None,
            incident_detected=a.alert,
            vlm_latency_ms=round(r.inference_latency_s * 1000, 3),
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            alert_gate=None if c.gate is None else asdict(c.gate),
            **chunk_timings(r),
        )

    def tokens(self, r: ChunkResult[Caption]) -> tuple[int, int]:
        return (r.output.input_tokens, r.output.output_tokens)

    def usage(self, req: GenerationJob[Caption], tally: Tally) -> CaptionsUsage:
        return CaptionsUsage(
            query_processing_time=round(time.time() - req.received_at),
            total_chunks_processed=tally.chunks,
            prompt_tokens=tally.input_tokens,
            completion_tokens=tally.output_tokens,
            total_tokens=tally.input_tokens + tally.output_tokens,
            vlm_calls_saved=gate.saved
            if (gate := getattr(req.processor, "gate", None)) is not None
            else None,
        )
