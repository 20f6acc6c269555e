"""The VLM service's logic without HTTP: a ServiceCore whose stage is loaded as `rtvi serve vlm` loads it
(spec.load_stage -> the openai-compat backend against the scripted OpenAI-compatible server, a real server
over a real socket) captions a generated clip chunk by chunk, decides alerts, samples the requested number
of frames per chunk, and refuses bad requests before the endpoint is asked anything."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rtvi.core.service import ServiceCore
from rtvi.errors import InvalidParameters, MalformedRequest, NoSuchResource, RtviError
from rtvi.http.generation import tally_of
from rtvi.services.vlm.protocol import VlmQuery
from rtvi.services.vlm.serving import VlmServing
from rtvi.services.vlm.spec import SPEC
from rtvi.settings import Settings
from tests.media_factory import make_clip_from_images
from tests.scripted_vlm import MODEL, ScriptedVlmServer
from tests.serving_harness import upload, with_serving

T = TypeVar("T")
PROMPT_LIMIT = 200  # VLM_PROMPT_MAX_LENGTH here, so a too-long prompt is cheap to write
TOKEN_LIMIT = 64  # VLM_MAX_GENERATION_TOKENS here
FPS = 5  # the clip's frame rate: 4 s chunks hold 20 frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s: a cat, a rocket, then coffee, 4 s each."""
    from skimage import data

    return make_clip_from_images(
        tmp_path_factory.mktemp("clip") / "scenes.mp4",
        [data.chelsea(), data.rocket(), data.coffee()],
        seconds_each=4,
        fps=FPS,
        width=160,
        height=120,
    )


def _with_serving(
    tmp_path: Path,
    scripted: ScriptedVlmServer,
    body: Callable[[ServiceCore, VlmServing], Awaitable[T]],
    **env: Any,
) -> T:
    settings = Settings(
        ASSET_STORAGE_DIR=str(tmp_path / "store"),
        KAFKA_ENABLED=False,
        RTVI_SEARCH_INDEX=False,
        VIA_VLM_ENDPOINT=scripted.url,
        VIA_VLM_ENDPOINT_MAX_RETRIES=0,
        VLM_PROMPT_MAX_LENGTH=PROMPT_LIMIT,
        VLM_MAX_GENERATION_TOKENS=TOKEN_LIMIT,
        **env,
    )
    return with_serving(SPEC.core, settings, SPEC.load_stage, VlmServing, body)


def _query(asset_id: str, prompt: str, **fields: Any) -> VlmQuery:
    return VlmQuery.model_validate({"id": asset_id, "model": MODEL, "prompt": prompt, **fields})


def _asked(scripted: ScriptedVlmServer, tag: str) -> list[dict[str, Any]]:
    """What the endpoint was asked by the requests whose prompt carries `tag` (in arrival order)."""
    return [r for r in scripted.requests() if tag in r["prompt"]]


def test_the_stage_is_the_configured_endpoint(tmp_path: Path, scripted: ScriptedVlmServer) -> None:
    async def body(core: ServiceCore, serving: VlmServing) -> None:
        assert serving.model.id == MODEL and serving.model.owned_by == "openai-compat"
        assert serving.model.api_type == "vlm"
        assert serving.model.details == {"language_model": True, "audio_support": False}
        assert core.indexing.indexer is None  # RTVI_SEARCH_INDEX=false: no caption encoder, no index

    _with_serving(tmp_path, scripted, body)


def test_a_file_is_captioned_chunk_by_chunk(tmp_path: Path, scripted: ScriptedVlmServer, clip: Path) -> None:
    async def body(core: ServiceCore, serving: VlmServing) -> None:
        asset_id = await upload(core, clip)
        tag = uuid.uuid4().hex
        req = await serving.caption_request(
            _query(
                asset_id,
                f"Describe the scene. {tag}",
                system_prompt="You watch a warehouse.",
                chunk_duration=4,
                num_frames_per_second_or_fixed_frames_chunk=3,
                max_tokens=32,
                seed=7,
            )
        )
        assert req.range() == (0.0, 12.0)
        assert req.processor.sampling.frames_per_chunk == 3 and req.processor.sampling.size is None
        results = [r async for r in req.results()]
        chunks = [serving.rendering.chunk(req, r) for r in results]
        assert [(r.start_s, r.end_s) for r in results] == [(0, 4), (4, 8), (8, 12)]
        assert [c.chunk_id for c in chunks] == [0, 1, 2]
        assert [(c.start_time, c.end_time) for c in chunks] == [
            ("0.0", "4.0"),
            ("4.0", "8.0"),
            ("8.0", "12.0"),
        ]
        assert [c.content for c in chunks] == ["I saw 3 image(s)."] * 3
        assert [c.frame_count for c in chunks] == [3, 3, 3]
        assert not any(c.incident_detected for c in chunks)
        assert all(c.response_format_error is None and c.reasoning_description == "" for c in chunks)
        # The scripted server counts 10 tokens per image plus the prompt's words; answers are 4 words.
        prompt_tokens = len(f"Describe the scene. {tag}".split()) + 30
        assert [(c.input_tokens, c.output_tokens) for c in chunks] == [(prompt_tokens, 4)] * 3

        asked = _asked(scripted, tag)
        assert len(asked) == 3
        assert all(a["images"] == 3 and a["system"] == "You watch a warehouse." for a in asked)
        assert all(a["max_tokens"] == 32 and a["seed"] == 7 for a in asked)

        usage = serving.rendering.usage(req, tally_of(serving.rendering, results))
        assert usage.total_chunks_processed == 3
        assert (usage.prompt_tokens, usage.completion_tokens) == (3 * prompt_tokens, 12)
        assert usage.total_tokens == 3 * prompt_tokens + 12

        sample = core.metrics.registry.get_sample_value
        assert sample("rtvi_vlm_requests_total", {"route": "generate_captions"}) == 1
        assert sample("vlm_input_tokens_per_chunk_count") == 3
        assert sample("vlm_output_tokens_per_chunk_sum") == 12
        assert sample("rtvi_incidents_total") == 0

        # No chunk_duration: the whole file is one chunk.
        whole = await serving.caption_request(
            _query(asset_id, "SAY:One long look.", num_frames_per_second_or_fixed_frames_chunk=2)
        )
        [only] = [r async for r in whole.results()]
        assert (only.start_s, only.end_s) == (0, 12) and only.output.answer.content == "One long look."

    _with_serving(tmp_path, scripted, body)


def test_an_alert_prompt_decides_an_incident_per_chunk(
    tmp_path: Path, scripted: ScriptedVlmServer, clip: Path
) -> None:
    async def body(core: ServiceCore, serving: VlmServing) -> None:
        asset_id = await upload(core, clip)
        common = {"chunk_duration": 6, "num_frames_per_second_or_fixed_frames_chunk": 2}
        yes = await serving.caption_request(
            _query(
                asset_id,
                "Is a forklift too close to a worker? SAY:Anomaly Detected: Yes\\nReason: too close.",
                alert_category="proximity",
                **common,
            )
        )
        yes_results = [r async for r in yes.results()]
        flagged = [serving.rendering.chunk(yes, r) for r in yes_results]
        assert [(c.start_time, c.end_time) for c in flagged] == [("0.0", "6.0"), ("6.0", "12.0")]
        assert [c.incident_detected for c in flagged] == [True, True]
        assert flagged[0].content == "Anomaly Detected: Yes\nReason: too close."
        assert [r.output.answer.trigger for r in yes_results] == ["Anomaly Detected: Yes"] * 2
        assert all(r.output.task.alert_category == "proximity" for r in yes_results)

        no = await serving.caption_request(
            _query(asset_id, "Is anyone running? SAY:Incident detected: No", **common)
        )
        assert [serving.rendering.chunk(no, r).incident_detected async for r in no.results()] == [
            False,
            False,
        ]

        # A JSON schema with a decision: the JSON's decision decides; an answer outside it is a format error.
        schema = {
            "type": "json_schema",
            "json_schema": {
                "name": "verdict",
                "schema": {
                    "type": "object",
                    "properties": {"decision": {"type": "string", "enum": ["Yes", "No"]}},
                    "required": ["decision"],
                },
            },
        }
        js = await serving.caption_request(
            _query(asset_id, 'SAY:{"decision": "Yes"}', response_format=schema, **common)
        )
        assert [r.output.answer.alert async for r in js.results()] == [True, True]
        bad = await serving.caption_request(
            _query(asset_id, 'SAY:{"decision": "Maybe"}', response_format=schema, **common)
        )
        bad_chunks = [serving.rendering.chunk(bad, r) async for r in bad.results()]
        assert [c.incident_detected for c in bad_chunks] == [False, False]
        assert all(c.response_format_error and "decision" in c.response_format_error for c in bad_chunks)

        sample = core.metrics.registry.get_sample_value
        assert sample("rtvi_incidents_total") == 4  # the Yes verdicts and the JSON Yes decisions
        assert sample("rtvi_response_format_errors_total") == 2

    _with_serving(tmp_path, scripted, body)


@pytest.mark.parametrize(
    ("fields", "frames"),
    [
        ({"num_frames_per_second_or_fixed_frames_chunk": 5}, 5),  # a fixed count per chunk
        (  # a rate: 0.5 fps x 4 s
            {"num_frames_per_second_or_fixed_frames_chunk": 0.5, "use_fps_for_chunking": True},
            2,
        ),
        ({"num_frames_per_second_or_fixed_frames_chunk": -1}, 4 * FPS),  # every frame of the chunk
        (  # media_io_kwargs.video overrides the field
            {
                "num_frames_per_second_or_fixed_frames_chunk": 5,
                "media_io_kwargs": {"video": {"num_frames": 7}},
            },
            7,
        ),
    ],
)
def test_frames_per_chunk_follow_the_request(
    tmp_path: Path, scripted: ScriptedVlmServer, clip: Path, fields: dict[str, Any], frames: int
) -> None:
    async def body(core: ServiceCore, serving: VlmServing) -> None:
        asset_id = await upload(core, clip)
        tag = uuid.uuid4().hex
        req = await serving.caption_request(_query(asset_id, f"Count. {tag}", chunk_duration=4, **fields))
        chunks = [serving.rendering.chunk(req, r) async for r in req.results()]
        assert [c.frame_count for c in chunks] == [frames] * 3
        assert [c.content for c in chunks] == [f"I saw {frames} image(s)."] * 3
        assert [a["images"] for a in _asked(scripted, tag)] == [frames] * 3

    _with_serving(tmp_path, scripted, body)


def test_bad_requests_fail_before_the_endpoint_is_asked(
    tmp_path: Path, scripted: ScriptedVlmServer, clip: Path
) -> None:
    async def body(core: ServiceCore, serving: VlmServing) -> None:
        asset_id = await upload(core, clip)
        asked_before = len(scripted.requests())

        # Refused by the serving's own checks, before the request is counted or planned.
        unchecked: list[tuple[type[RtviError], str, str, str, dict[str, Any]]] = [
            (InvalidParameters, "BadParameters", "set together", "hi", {"vlm_input_width": 224}),
            (InvalidParameters, "BadParameters", "set together", "hi", {"vlm_input_height": 224}),
            (MalformedRequest, "InvalidParameters", "VLM_PROMPT_MAX_LENGTH", "x" * (PROMPT_LIMIT + 1), {}),
            (MalformedRequest, "InvalidParameters", "must not be empty", "   ", {}),
            (
                MalformedRequest,
                "InvalidParameters",
                "VLM_SYSTEM_PROMPT_MAX_LENGTH",
                "hi",
                {"system_prompt": "s" * (serving.settings.vlm_system_prompt_max_length + 1)},
            ),
            (
                MalformedRequest,
                "InvalidParameters",
                "VLM_MAX_GENERATION_TOKENS",
                "hi",
                {"max_tokens": TOKEN_LIMIT + 1},
            ),
            (InvalidParameters, "BadParameters", "No such model", "hi", {"model": "gpt-4o"}),
            (InvalidParameters, "BadParameters", "api_type", "hi", {"api_type": "embedding"}),
            (InvalidParameters, "BadParameters", "does not support audio", "hi", {"enable_audio": True}),
        ]
        # Refused while the request is opened (open_generation).
        unplannable: list[tuple[type[RtviError], str, str, str, dict[str, Any]]] = [
            (
                MalformedRequest,
                "InvalidParameters",
                "not a valid JSON schema",
                "hi",
                {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 12}}}},
            ),
            (
                InvalidParameters,
                "BadParameters",
                "smaller than chunk_duration",
                "hi",
                {"chunk_duration": 4, "chunk_overlap_duration": 4},
            ),
        ]
        requests = core.metrics.registry.get_sample_value
        reported: list[tuple[str, str]] = []  # what reaches the error bus (a service's failures)
        report_error = core.report_error

        def recording(stream_id: str, message: str) -> None:
            reported.append((stream_id, message))
            report_error(stream_id, message)

        core.report_error = recording  # type: ignore[method-assign]
        for error, code, match, prompt, fields in [*unchecked, *unplannable]:
            with pytest.raises(error, match=match) as info:
                await serving.caption_request(_query(asset_id, prompt, **fields))
            assert info.value.code == code, (match, info.value.code)
        with pytest.raises(NoSuchResource) as missing:
            await serving.caption_request(_query(str(uuid.uuid4()), "hi"))
        assert missing.value.code == "BadParameter"
        # A refused request is the client's mistake: not counted as served, not a service failure.
        assert not requests("rtvi_vlm_requests_total", {"route": "generate_captions"})
        assert reported == []

        # A size set in both fields is accepted and reaches the frame sampling.
        sized = await serving.caption_request(
            _query(asset_id, "hi", vlm_input_width=64, vlm_input_height=48, chunk_duration=6)
        )
        assert sized.processor.sampling.size == (64, 48)
        assert requests("rtvi_vlm_requests_total", {"route": "generate_captions"}) == 1
        assert len(scripted.requests()) == asked_before  # refusing and planning ask the endpoint nothing

    _with_serving(tmp_path, scripted, body)


def test_an_endpoint_refusal_fails_the_file_request(
    tmp_path: Path, scripted: ScriptedVlmServer, clip: Path
) -> None:
    async def body(core: ServiceCore, serving: VlmServing) -> None:
        asset_id = await upload(core, clip)
        req = await serving.caption_request(
            _query(asset_id, f"FAIL_ONCE:400 {uuid.uuid4()}", num_frames_per_second_or_fixed_frames_chunk=1)
        )
        with pytest.raises(
            InvalidParameters, match="VLM endpoint answered 400: scripted failure 400"
        ) as info:
            _ = [r async for r in req.results()]
        assert info.value.code == "RequestError"

    _with_serving(tmp_path, scripted, body)


def test_the_reference_input_size_is_the_default_frame_size(
    tmp_path: Path, scripted: ScriptedVlmServer, clip: Path
) -> None:
    """VLM_INPUT_WIDTH / VLM_INPUT_HEIGHT (the reference compose's variables): the size a request that
    sets none is sampled at; a request's own size still wins."""

    async def body(core: ServiceCore, serving: VlmServing) -> None:
        asset_id = await upload(core, clip)
        default = await serving.caption_request(_query(asset_id, "hi", chunk_duration=6))
        assert default.processor.sampling.size == (96, 72)
        own = await serving.caption_request(
            _query(asset_id, "hi", vlm_input_width=64, vlm_input_height=48, chunk_duration=6)
        )
        assert own.processor.sampling.size == (64, 48)

    _with_serving(tmp_path, scripted, body, VLM_INPUT_WIDTH=96, VLM_INPUT_HEIGHT=72)
