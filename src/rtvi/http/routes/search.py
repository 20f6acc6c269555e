"""/v1/search: the indexed chunks closest to a text or an image, and their thumbnails (issue 12)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from rtvi.core.index.base import ChunkIndex, Hit, SearchFilter
from rtvi.core.service import ServiceCore
from rtvi.errors import InvalidParameters, NoSuchResource, Unavailable
from rtvi.http.deps import get_core
from rtvi.http.protocol import SearchHit, SearchIndexStats, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/search", tags=["Search"])
THUMBNAIL_PATH = "/v1/search/thumbnails/{entry_id}"


def _index(core: ServiceCore) -> ChunkIndex:
    indexing = core.indexing
    if indexing.indexer is None or indexing.query_vector is None:
        if not core.settings.search_index:
            raise Unavailable("The search index is disabled (RTVI_SEARCH_INDEX=false)")
        core.require_stage()  # still loading, or failed: says which
        raise Unavailable("This service keeps no search index")
    return indexing.indexer.index


def _window(start: str | float | None, end: str | float | None) -> SearchFilter:
    """start_time / end_time: both ISO-8601 (wall clock) or both seconds (into a file)."""
    if start is None and end is None:
        return SearchFilter()
    given = [t for t in (start, end) if t is not None]
    if all(isinstance(t, (int, float)) for t in given):
        return SearchFilter(offset_from=_seconds(start), offset_to=_seconds(end))
    if all(isinstance(t, str) for t in given):
        try:
            stamps = [_unix(t) if isinstance(t, str) else None for t in (start, end)]
        except ValueError as exc:
            raise InvalidParameters(f"start_time/end_time must be ISO-8601 times: {exc}") from exc
        return SearchFilter(abs_from=stamps[0], abs_to=stamps[1])
    raise InvalidParameters("start_time and end_time must both be ISO-8601 times or both seconds")


def _unix(iso: str) -> float:
    moment = datetime.fromisoformat(iso)  # any ISO-8601 form; a time without a zone is UTC
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _seconds(t: str | float | None) -> float | None:
    return None if t is None or isinstance(t, str) else float(t)


@router.post("", response_model=SearchResponse)
async def search(body: SearchRequest, core: ServiceCore = Depends(get_core)) -> SearchResponse:
    """The `top_k` indexed chunks closest to `query` (text) or `image` (data: URI), best first."""
    index = _index(core)
    if (body.query is None) == (body.image is None):
        raise InvalidParameters("Give either query (a text) or image (a data: URI)")
    if body.query is not None and not body.query.strip():
        raise InvalidParameters("The search query must not be empty")
    where = replace(
        _window(body.start_time, body.end_time),
        asset_ids=body.asset_ids or (),
        stream_ids=body.stream_ids or (),
    )
    assert core.indexing.query_vector is not None
    vector = await core.indexing.query_vector(body.query, body.image)
    hits = await asyncio.to_thread(index.search, vector, body.top_k, where)
    return SearchResponse(data=[_rendered(h) for h in hits])


@router.get("/chunks", response_model=SearchResponse)
async def chunks(
    asset_id: Annotated[str | None, Query(max_length=256)] = None,
    stream_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    core: ServiceCore = Depends(get_core),
) -> SearchResponse:
    """The latest `limit` indexed chunks of one file or stream, in time order (score 0): a timeline."""
    index = _index(core)
    if (asset_id is None) == (stream_id is None):
        raise InvalidParameters("Give either asset_id or stream_id")
    owner = asset_id if asset_id is not None else stream_id
    assert owner is not None
    hits = await asyncio.to_thread(index.latest, owner, limit)
    return SearchResponse(data=[_rendered(h) for h in hits if h.live == (stream_id is not None)])


@router.get("/stats", response_model=SearchIndexStats)
async def stats(core: ServiceCore = Depends(get_core)) -> SearchIndexStats:
    """The index's entries, its bytes on disk and in memory, and its retention."""
    index = _index(core)
    footprint = await asyncio.to_thread(index.footprint)  # on Milvus, a request to the server
    s = core.settings.index
    expired = core.metrics.registry.get_sample_value
    return SearchIndexStats(
        backend="milvus" if s.milvus_uri else "sqlite",
        entries=footprint.entries,
        disk_bytes=footprint.disk_bytes,
        memory_bytes=footprint.memory_bytes,
        retention_hours=s.index_retention_hours,
        max_gb=s.index_max_gb,
        expired={
            reason: int(expired("rtvi_index_chunks_expired_total", {"reason": reason}) or 0)
            for reason in ("age", "size")
        },
    )


def _rendered(h: Hit) -> SearchHit:
    return SearchHit(
        asset_id=h.owner_id,
        stream_id=h.owner_id if h.live else None,
        source=h.source,
        chunk_idx=h.chunk_idx,
        start_time=h.start_time,
        end_time=h.end_time,
        start_offset=None if h.live else round(h.start_s, 3),
        end_offset=None if h.live else round(h.end_s, 3),
        score=round(h.score, 6),
        thumbnail_url=THUMBNAIL_PATH.format(entry_id=h.entry_id) if h.has_thumbnail else None,
        caption=h.caption,
    )


@router.get(
    "/thumbnails/{entry_id}", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}}
)
async def thumbnail(entry_id: str, core: ServiceCore = Depends(get_core)) -> Response:
    """A search hit's thumbnail (image/jpeg)."""
    index = _index(core)
    well_formed = len(entry_id) == 32 and entry_id.isalnum()
    jpeg = await asyncio.to_thread(index.thumbnail, entry_id) if well_formed else None
    if jpeg is None:
        raise NoSuchResource(entry_id, f"No such thumbnail {entry_id[:64]}")
    # Entries are keyed by their content's place (owner, chunk): a re-index may replace the image.
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})
