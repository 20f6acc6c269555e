"""Live stream registrations (spec §3): register (probe the camera first), delete, and the inference a CV
registration asks for in its metadata, which starts at once and resumes after a restart.

A stream is an asset of kind "live": its URL without credentials in `path`, everything else (credentials,
description, place, probe results, auto-start settings) in `meta`. The auto-start settings are the
service's own `StreamMetadata` model: stored as JSON under one key, read back as that model by
`LiveStreams.auto_start_of` (nothing else reads them).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from rtvi.core.assets.registry import Asset
from rtvi.core.assets.store import AssetStore
from rtvi.core.cluster import StreamOwnership
from rtvi.core.credentials import redact, with_credentials
from rtvi.core.media.chunks import ChunkParams
from rtvi.core.media.rtsp import probe_rtsp
from rtvi.core.media.types import MediaError
from rtvi.core.models.info import ModelInfo
from rtvi.core.net import ip_literal, resolve
from rtvi.core.pipeline.live_jobs import LiveManager, rtsp_options
from rtvi.core.pipeline.results import ChunkProcessor
from rtvi.core.telemetry.metrics import Metrics
from rtvi.errors import (
    Forbidden,
    InvalidMedia,
    InvalidParameters,
    NoSuchResource,
    RtviError,
)
from rtvi.settings import LiveSettings

log = logging.getLogger(__name__)

PROBE_FAILED = "Could not connect to the RTSP URL or there is no video stream from the RTSP URL"
PROBE_ATTEMPTS = 3
PROBE_RETRY_PAUSE_S = 0.5  # doubled after each failed try
# Namespace of the request ids of cluster-run streams: uuid5(stream id @ registration time).
_REQUEST_IDS = uuid.UUID("6f1d3c2e-5b8a-4e47-9c1d-2a7b9e4f0c11")


def _cluster_request_id(asset: Asset) -> str:
    """The same on every replica, new for a stream registered again under the same id."""
    return str(uuid.uuid5(_REQUEST_IDS, f"{asset.id}@{asset.created_at!r}"))


DEFAULT_CHUNK_S = 10  # spec §3.4: CV metadata without chunk_duration is cut into 10 s chunks
# The asset meta key of the auto-start settings (a StreamMetadata as JSON); only LiveStreams uses it.
_AUTO_START = "auto_start"


class StreamMetadata(BaseModel):
    """The metadata of a CV registration (spec §3.4) as a service takes it: the chunking of the live
    inference it may start. Each service declares its own subclass (`CoreConfig.stream_metadata`): its
    fields, and `requests_inference`, whether they ask for inference. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    chunk_duration: Annotated[int, Field(ge=0, le=3600)] = DEFAULT_CHUNK_S
    chunk_overlap_duration: Annotated[int, Field(ge=-3600, le=3600)] = 0

    @field_validator("chunk_duration", "chunk_overlap_duration", mode="before")
    @classmethod
    def _null_is_default(cls, value: object, info: ValidationInfo) -> object:
        """An explicit null is the field's default (as when it is absent)."""
        if value is None and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value

    def requests_inference(self) -> bool:
        """Whether these settings ask the service to start its inference at registration (the stage's
        `live_processor` then builds it, or declines). None of the base's fields do."""
        return False

    def chunk_params(self) -> ChunkParams:
        """The live chunking; InvalidParameters when it cannot make chunks."""
        params = ChunkParams(float(self.chunk_duration), float(self.chunk_overlap_duration))
        params.require_live()
        return params


M_contra = TypeVar("M_contra", bound=StreamMetadata, contravariant=True)


class LiveStarter(Protocol[M_contra]):
    """What the loaded model stage offers for streams that start inference on registration."""

    @property
    def model(self) -> ModelInfo: ...

    def live_processor(self, asset: Asset, metadata: M_contra) -> ChunkProcessor[Any] | None: ...


class LiveStreams:
    def __init__(
        self,
        settings: LiveSettings,
        store: AssetStore,
        live: LiveManager,
        metrics: Metrics,
        report_error: Callable[[str, str], None],
        metadata_model: type[StreamMetadata] = StreamMetadata,
    ) -> None:
        self.settings = settings
        self.store = store
        self.live = live
        self.metrics = metrics
        self.report_error = report_error
        # The service's model of CV metadata: what auto-started streams keep and their stage receives.
        self.metadata_model = metadata_model
        # Set once the model has loaded: who runs the inference auto-started streams ask for.
        self.starter: LiveStarter[Any] | None = None
        # With RTVI_CLUSTER_BOOTSTRAP: which replica runs which auto-started stream (join_cluster).
        self.ownership: StreamOwnership | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def list(self) -> list[Asset]:
        return self.store.registry.list_assets("live")

    async def check_host(self, url: str) -> None:
        """RTVI_RTSP_ALLOWED_HOSTS (empty = any): the camera's host must be listed by name, or resolve
        only to addresses inside a listed address or network. Forbidden otherwise."""
        allowed = self.settings.rtsp_allowed_hosts
        if not allowed:
            return
        host = (urlsplit(url).hostname or "").lower()
        if host in allowed.names:
            return
        refused = Forbidden(f"Camera host {host!r} is not in RTVI_RTSP_ALLOWED_HOSTS")
        if not allowed.networks and ip_literal(host) is None:
            raise refused  # only names are allowed: nothing to resolve
        try:
            addresses = await resolve(host)
        except OSError:
            raise refused from None
        if not addresses or not all(any(a in net for net in allowed.networks) for a in addresses):
            raise refused

    async def probe(self, url: str) -> dict[str, Any]:
        """Connect to the camera once (bounded by the open timeout). -> probe results for `meta`."""
        if self.settings.skip_media_verification:
            return {}
        opts = rtsp_options(self.settings)
        for attempt in range(PROBE_ATTEMPTS):
            try:
                # The probe thread cannot be interrupted; the wait is bounded so the request never hangs.
                info = await asyncio.wait_for(
                    asyncio.to_thread(probe_rtsp, url, opts), opts.open_timeout_s + opts.read_timeout_s + 1
                )
                break
            except (MediaError, TimeoutError) as exc:
                # Cameras and NVRs refuse a session now and then (too many clients, a shared media being
                # torn down by the previous client), and a camera's first session can be slow to start
                # its encoder: more tries after growing pauses.
                reason = redact(str(exc)) if isinstance(exc, MediaError) else "timed out"
                log.info("RTSP probe of %s failed (attempt %d): %s", redact(url), attempt + 1, reason)
                if attempt + 1 == PROBE_ATTEMPTS:
                    raise InvalidMedia(PROBE_FAILED) from exc
                await asyncio.sleep(PROBE_RETRY_PAUSE_S * 2**attempt)
        return {"codec": info.codec, "width": info.width, "height": info.height, "fps": info.fps}

    async def register(
        self,
        stream_id: str,
        url: str,
        username: str,
        password: str,
        duplicate_code: str,
        *,
        sensor_name: str = "",
        meta: dict[str, Any],
        metadata: StreamMetadata | None = None,
    ) -> Asset:
        """Reserve the id, probe the camera, persist the registration. `metadata` (a CV registration's,
        validated as the service's model): kept when it asks for inference, which `auto_start` then
        starts and a restart resumes."""
        await self.check_host(url)
        if metadata is not None and metadata.requests_inference():
            meta = {**meta, _AUTO_START: metadata.model_dump(mode="json", exclude_none=True)}
        registry = self.store.registry
        with registry.reserve(stream_id, duplicate_code=duplicate_code):
            probed = await self.probe(with_credentials(url, username, password))
            asset = Asset(
                id=stream_id,
                kind="live",
                media_type="video",
                filename=meta.get("description", "") or stream_id,
                path=url,
                owns_dir=False,
                sensor_name=sensor_name,
                meta={**meta, "username": username, "password": password, **probed},
            )
            registry.add(asset)
        log.info("live stream %s registered: %s", stream_id, url)
        return asset

    async def delete(self, stream_id: str, drain_timeout_s: float) -> None:
        """Stop every job on the stream (readers get [DONE]), then remove the registration. The registry
        and index calls run in threads: the event loop keeps serving the other streams meanwhile."""
        start = time.perf_counter()
        asset = await asyncio.to_thread(self.store.get_live, stream_id)
        await self.live.stop(asset.id, drain_timeout_s)
        drained = time.perf_counter()
        if not await asyncio.to_thread(self.store.registry.remove, asset.id):
            raise NoSuchResource(stream_id)  # a concurrent delete came first
        await self._announce(asset.id, run=False)
        await asyncio.to_thread(self.store.removed, asset.id)
        self.metrics.observe_stream_delete(time.perf_counter() - start, drained - start)
        log.info("live stream %s deleted", stream_id)

    async def stop_inference(self, stream_id: str, request_id: str | None = None) -> None:
        """Stop the stream's jobs, or only the job of `request_id` (spec §4.5); readers get [DONE] and the
        stream stays registered. Stopping them all also ends an auto-started inference for good (it is
        not resumed after a restart)."""
        asset = self.store.get_live(stream_id)
        drain = self.settings.stream_delete_drain_timeout_s
        stopped = await self.live.stop(asset.id, drain, request_id)
        if request_id is not None:
            if not stopped:
                raise InvalidParameters(
                    f"No active request {request_id[:64]!r} on live stream {stream_id}",
                    "InvalidParameterValue",
                )
            return
        if asset.meta.pop(_AUTO_START, None) is not None:
            self.store.registry.update_meta(asset.id, asset.meta)
            await self._announce(asset.id, run=False)

    def auto_start_of(self, asset: Asset) -> StreamMetadata | None:
        """The CV metadata the stream's inference was asked with (the service's model), or None when its
        registration asked for none (or it was stopped). InvalidParameters when what is stored no
        longer fits the model."""
        stored = asset.meta.get(_AUTO_START)
        if not stored:
            return None
        try:
            return self.metadata_model.model_validate(stored)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"])
            raise InvalidParameters(f"its stored metadata is invalid: {where}: {err['msg']}") from None

    def _auto_started(self, asset: Asset) -> bool:
        return bool(asset.meta.get(_AUTO_START))

    async def auto_start(self, asset: Asset) -> bool:
        """Start the inference a CV registration asked for (its metadata: `auto_start_of`), when the
        loaded stage takes it (spec §3.4): here, or, in a cluster, on the replica that owns the stream
        (announced on the cluster topic). A failure never fails the registration: it is reported."""
        if self.ownership is None:
            return self.run_here(asset)
        if self._processor(asset, self.auto_start_of(asset)) is None:
            return False
        try:
            await self._announce(asset.id, run=True)
        except Exception as exc:
            log.warning("stream %s: inference not announced to the cluster: %s", asset.id, exc)
            self.report_error(asset.id, f"Failed to start inference: {exc}")
            return False
        return True

    def run_here(self, asset: Asset, *, cluster: bool = False) -> bool:
        """Start an auto-started stream's inference in this process. In a cluster its request id and
        chunk windows do not depend on the replica, so a take-over repeats the same chunk keys."""
        try:
            metadata = self.auto_start_of(asset)
            processor = self._processor(asset, metadata)
            if metadata is None or processor is None:
                return False
            params = metadata.chunk_params()
            request_id = _cluster_request_id(asset) if cluster else None
            self.live.start(
                asset, params, processor, persistent=True, request_id=request_id, epoch_grid=cluster
            )
        except Exception as exc:  # spec §3.4: a failure to start inference does not fail the request
            message = exc.message if isinstance(exc, RtviError) else str(exc)
            log.warning("stream %s: inference not started: %s", asset.id, message)
            self.report_error(asset.id, f"Failed to start inference: {message}")
            return False
        return True

    def _processor(
        self, asset: Asset, metadata: StreamMetadata | None, *, quiet: bool = False
    ) -> ChunkProcessor[Any] | None:
        """The processor of the stream's own inference (`metadata`: its auto_start_of), or None.
        `quiet`: a lookup, not a start (every live SSE request in a cluster asks), so nothing is logged."""
        starter = self.starter
        if starter is None or metadata is None:
            return None
        processor = starter.live_processor(asset, metadata)
        if processor is None and not quiet:
            log.info("stream %s: its metadata does not start %s inference", asset.id, starter.model.id)
        return processor

    def resume_auto_started(self) -> None:
        """After the model loads: resume the inference of every stream that had it auto-started (in a
        cluster, the streams this replica is assigned start as the assignment arrives)."""
        if self.ownership is not None:
            return
        for asset in self.list():
            if self.run_here(asset):
                log.info("stream %s: auto-started inference resumed", asset.id)

    # --- cluster (core/cluster.py) ---------------------------------------------------------------
    async def join_cluster(self, ownership: StreamOwnership) -> None:
        """Take part in the stream ownership of the service's replicas (after the model loaded)."""
        self._loop = asyncio.get_running_loop()
        # Set before start: should the broker be away, this replica must still not resume every stream
        # on its own (the others run them); it then holds no partition, so no camera.
        self.ownership = ownership
        await asyncio.to_thread(ownership.start)

    def cluster_request_id(self, asset: Asset, processor: ChunkProcessor[Any]) -> str | None:
        """The request id a cluster-run stream's chunks carry, when `processor` computes what its own
        inference does (same key); else None."""
        if self.ownership is None or not asset.is_live:
            return None
        try:
            own = self._processor(asset, self.auto_start_of(asset), quiet=True)
        except RtviError:  # its metadata asks for an inference it cannot have: nothing runs
            return None
        return _cluster_request_id(asset) if own is not None and own.key == processor.key else None

    def runs_in_cluster(self, stream_id: str) -> bool:
        """Whether the stream is still registered with its own inference (not deleted, not stopped)."""
        asset = self.store.registry.get(stream_id)
        return asset is not None and self._auto_started(asset)

    async def leave_cluster(self) -> None:
        if self.ownership is not None:
            await asyncio.to_thread(self.ownership.close)

    def start_owned(self, stream_id: str) -> None:
        """Ownership hook (consumer thread): this replica now runs `stream_id`."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_owned, stream_id)

    def stop_owned(self, stream_id: str) -> None:
        """Ownership hook (consumer thread): `stream_id` stopped, or went to another replica. Only its
        cluster-run job stops: a local reader's job on the same camera (another prompt) is not the
        cluster's. A stream deleted (on any replica) has every job here stopped."""
        if self._loop is not None and not self._loop.is_closed():
            asset = self.store.registry.get(stream_id)
            request_id = _cluster_request_id(asset) if asset is not None else None
            drain = self.settings.stream_delete_drain_timeout_s
            stop = self.live.stop(stream_id, drain, request_id=request_id)
            asyncio.run_coroutine_threadsafe(stop, self._loop)

    def _start_owned(self, stream_id: str) -> None:
        asset = self.store.registry.get(stream_id)
        if asset is None or not asset.is_live:
            log.warning("cluster: stream %s is announced but not registered; not started", stream_id)
            return
        if self.run_here(asset, cluster=True):
            log.info("cluster: stream %s runs here", stream_id)

    async def _announce(self, stream_id: str, run: bool) -> None:
        if self.ownership is not None:
            await asyncio.to_thread(self.ownership.announce, stream_id, run)
