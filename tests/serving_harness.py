"""A service's serving class on a real ServiceCore, without HTTP: what the serving unit tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from rtvi.core.assets.store import NewFile
from rtvi.core.service import CoreConfig, ModelStage, ServiceCore
from rtvi.errors import Unavailable
from rtvi.settings import Settings

T = TypeVar("T")
S = TypeVar("S")


def with_serving(
    config: CoreConfig,
    settings: Settings,
    load_stage: Callable[[ServiceCore], ModelStage],
    stage_type: type[S],
    body: Callable[[ServiceCore, S], Awaitable[T]],
) -> T:
    """Start a core, load its stage as the service does (refused while loading), run `body`, close."""

    async def run() -> T:
        core = ServiceCore(config, settings)
        core.start()
        with pytest.raises(Unavailable, match="loading"):
            core.require_stage()
        await core.load(load_stage)
        serving: Any = core.require_stage()
        assert isinstance(serving, stage_type)
        try:
            return await body(core, serving)
        finally:
            await core.close()

    return asyncio.run(run())


async def upload(core: ServiceCore, clip: Path, media_type: Literal["video", "image"] = "video") -> str:
    """Register a clip (or an image) as an upload does; its asset id."""
    with core.store.staging() as tmp:
        staged = tmp / "upload.bin"
        staged.write_bytes(clip.read_bytes())
        asset = await core.store.add_upload(staged, clip.name, staged.stat().st_size, NewFile(media_type))
    return asset.id
