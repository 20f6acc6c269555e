"""CV auto-start metadata as each service's model: what a registration stores, what the registry gives
back (registries written before the metadata was typed included), and a stored copy that no longer fits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rtvi.core.assets.registry import Asset
from rtvi.core.service import CoreConfig, ServiceCore
from rtvi.core.streams import StreamMetadata
from rtvi.errors import InvalidParameters
from rtvi.services.embed.protocol import EmbedStreamMetadata
from rtvi.services.embed.spec import SPEC as EMBED
from rtvi.services.vlm.protocol import FrameOptions, VlmStreamMetadata
from rtvi.services.vlm.spec import SPEC as VLM
from rtvi.settings import Settings

T = TypeVar("T")


def with_core(tmp_path: Path, config: CoreConfig, body: Callable[[ServiceCore], Awaitable[T]]) -> T:
    """A core of `config` (no model stage), whose registrations skip the camera probe."""
    settings = Settings(  # type: ignore[call-arg]
        ASSET_STORAGE_DIR=str(tmp_path / "store"), VSS_SKIP_INPUT_MEDIA_VERIFICATION="true"
    )

    async def run() -> T:
        core = ServiceCore(config, settings)
        try:
            return await body(core)
        finally:
            await core.close()

    return asyncio.run(run())


def stored(core: ServiceCore, stream_id: str, auto_start: dict[str, Any]) -> Asset:
    """A live stream as an older rtvi registered it (its auto-start metadata a plain dict), read back."""
    meta = {"description": stream_id, "camera_id": stream_id, "auto_start": auto_start}
    asset = Asset(id=stream_id, kind="live", media_type="video", filename=stream_id, path="rtsp://cam/x",
                  owns_dir=False, meta=meta)  # fmt: skip
    core.store.registry.add(asset)
    again = core.store.registry.get(stream_id)
    assert again is not None
    return again


def test_the_services_declare_their_models() -> None:
    assert EMBED.core.stream_metadata is EmbedStreamMetadata
    assert VLM.core.stream_metadata is VlmStreamMetadata
    assert EmbedStreamMetadata(model="m").requests_inference()
    assert not EmbedStreamMetadata(prompt="Describe").requests_inference()
    assert VlmStreamMetadata(prompt="").requests_inference()  # present counts, empty or not
    assert not VlmStreamMetadata(model="m").requests_inference()
    assert not StreamMetadata(chunk_duration=5).requests_inference()
    # Absent or null, chunk_duration is 10 (spec §3.4) and the overlap 0.
    assert StreamMetadata.model_validate({"chunk_duration": None}).chunk_params().chunk_duration == 10
    assert StreamMetadata().chunk_overlap_duration == 0


def test_an_embed_registration_before_typed_metadata_is_read_back(tmp_path: Path) -> None:
    async def body(core: ServiceCore) -> None:
        asset = stored(core, "old-cam", {"model": "cosmos-embed1", "chunk_duration": 4})
        md = core.streams.auto_start_of(asset)
        assert isinstance(md, EmbedStreamMetadata)
        assert (md.model, md.chunk_duration, md.chunk_overlap_duration) == ("cosmos-embed1", 4, 0)
        assert md.chunk_params().chunk_duration == 4
        plain = stored(core, "plain-cam", {})
        assert core.streams.auto_start_of(plain) is None

    with_core(tmp_path, EMBED.core, body)


def test_a_vlm_registration_before_typed_metadata_is_read_back(tmp_path: Path) -> None:
    old = {
        "prompt": "Is anyone at the door?",
        "system_prompt": "Be brief",
        "model": "vila",
        "max_tokens": 64,
        "temperature": 0.2,
        "chunk_duration": 10,
        "chunk_overlap_duration": 2,
        "num_frames_per_second_or_fixed_frames_chunk": 4.0,
        "vlm_input_width": 320,
        "vlm_input_height": 240,
        "enable_reasoning": True,
        "alert_category": "door",
        "mm_processor_kwargs": {"max_pixels": 1000},
        "response_format_type": "json_object",
        "resolution": "1920x1080",
    }

    async def body(core: ServiceCore) -> None:
        md = core.streams.auto_start_of(stored(core, "door", old))
        assert isinstance(md, VlmStreamMetadata) and md.requests_inference()
        assert md.model_dump(exclude_none=True) == old
        assert md.frame_options() == FrameOptions(
            max_tokens=64,
            temperature=0.2,
            num_frames_per_second_or_fixed_frames_chunk=4,
            vlm_input_width=320,
            vlm_input_height=240,
            enable_reasoning=True,
            mm_processor_kwargs={"max_pixels": 1000},
        )
        params = md.chunk_params()
        assert (params.chunk_duration, params.overlap) == (10, 2)

    with_core(tmp_path, VLM.core, body)


def test_a_registration_stores_the_services_model_and_only_when_it_asks_for_inference(
    tmp_path: Path,
) -> None:
    async def body(core: ServiceCore) -> None:
        streams = core.streams

        async def register(stream_id: str, metadata: StreamMetadata | None) -> Asset:
            await streams.register(stream_id, "rtsp://cam/x", "", "", "Duplicate", meta={}, metadata=metadata)
            asset = core.store.registry.get(stream_id)
            assert asset is not None
            return asset

        asked = await register("asked", VlmStreamMetadata(prompt="Describe", max_tokens=8))
        assert asked.meta["auto_start"] == {
            "prompt": "Describe",
            "max_tokens": 8,
            "chunk_duration": 10,
            "chunk_overlap_duration": 0,
        }
        assert streams.auto_start_of(asked) == VlmStreamMetadata(prompt="Describe", max_tokens=8)
        for stream_id, metadata in (("model-only", VlmStreamMetadata(model="m")), ("none", None)):
            asset = await register(stream_id, metadata)
            assert "auto_start" not in asset.meta and streams.auto_start_of(asset) is None

    with_core(tmp_path, VLM.core, body)


def test_a_stored_copy_that_no_longer_fits_is_reported_not_started(tmp_path: Path) -> None:
    reported: list[tuple[str, str]] = []

    async def body(core: ServiceCore) -> None:
        core.streams.report_error = lambda stream_id, message: reported.append((stream_id, message))
        asset = stored(core, "odd", {"prompt": "Describe", "chunk_duration": 10, "retired_field": 1})
        with pytest.raises(InvalidParameters, match="retired_field"):
            core.streams.auto_start_of(asset)
        assert core.streams.run_here(asset) is False

    with_core(tmp_path, VLM.core, body)
    assert reported == [("odd", "Failed to start inference: its stored metadata is invalid: retired_field: "
                                "Extra inputs are not permitted")]  # fmt: skip
