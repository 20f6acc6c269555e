"""`rtvi` command line: `rtvi serve NAME` runs a service; the client commands (upload, embed, search,
caption, streams, reindex) talk to a running one over HTTP (docs/cli.md).

Heavy imports (the service stack, httpx, rich) happen inside the commands, so `rtvi --help` stays fast.
Results go to stdout (a table, or JSON with --json); progress and errors go to stderr, so
`rtvi ... --json | jq` always reads pure JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rtvi import services
from rtvi.core.credentials import public_url

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Column

    from rtvi.client import Events, Json, RtviClient

app = typer.Typer(help="rtvi: real-time video intelligence services (RTVI v1 API).", no_args_is_help=True)
streams_app = typer.Typer(help="Register, list and remove live RTSP streams.", no_args_is_help=True)
app.add_typer(streams_app, name="streams")

DEFAULT_URL = "http://127.0.0.1:8000"
CONNECTION = "Connection and output"


@app.callback()
def main() -> None:
    """rtvi command line."""


@app.command()
def serve(
    service: str = typer.Argument("embed", help=f"Which service to run: {', '.join(services.names())}."),
    host: str | None = typer.Option(None, help="Bind address (default: BACKEND_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default: BACKEND_PORT or 8000)."),
) -> None:
    """Start a service on the configured model."""
    if service not in services.names():
        raise typer.BadParameter(f"no service {service!r}; choose from {', '.join(services.names())}")
    import uvicorn

    from rtvi.http.app import build_app
    from rtvi.reference_env import warn_without_effect
    from rtvi.settings import Settings

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper() or "INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    warn_without_effect(os.environ)
    application = build_app(services.load_spec(service), settings)
    uvicorn.run(
        application,
        host=host or settings.backend_host,
        port=port or settings.backend_port,
        log_level=(settings.log_level or "info").lower(),
    )


# --- options every client command shares (defined once, used as parameter types) -------------------
ServiceUrl = Annotated[
    str, typer.Option("--url", envvar="RTVI_URL", help="The service's base URL.", rich_help_panel=CONNECTION)
]
ApiKey = Annotated[
    str,
    typer.Option(
        "--api-key",
        envvar="RTVI_API_KEY",
        help="Sent as `Authorization: Bearer KEY` (prefer the env var: it stays out of `ps`).",
        show_default=False,
        rich_help_panel=CONNECTION,
    ),
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of a table.", rich_help_panel=CONNECTION)
]


class MediaKind(StrEnum):
    video = "video"
    image = "image"


MediaOpt = Annotated[
    MediaKind | None,
    typer.Option("--media-type", help="video or image (default: from the file's extension)."),
]
SourceArg = Annotated[str, typer.Argument(help="A file, an http(s):// or s3:// URL, or an rtsp:// stream.")]
ChunkOpt = Annotated[int, typer.Option("--chunk", help="Chunk duration in seconds (0: the whole file).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model id (default: the service's model).")]


@dataclass(frozen=True, slots=True)
class Options:
    """The shared options of one client command."""

    url: str
    api_key: str
    json: bool


@dataclass(slots=True)
class Target:
    """What a generate request runs on: a stored file, or a live stream (live: runs until Ctrl-C)."""

    id: str
    name: str
    live: bool = False


@contextmanager
def _session(opts: Options) -> Iterator[RtviClient]:
    """A client for the command; every expected failure becomes `error: ...` on stderr and exit 1."""
    from rtvi.client import ClientError, RtviClient

    try:
        with RtviClient(opts.url, opts.api_key or None) as client:
            yield client
    except ClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _stdout() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def _progress(*columns: Any) -> Progress:
    """A progress display on stderr. When stdout is a terminal too, lines printed meanwhile are drawn
    above it (rich's redirect); when stdout is a pipe they go straight there, never into stderr."""
    from rich.progress import Progress

    return Progress(*columns, console=_stderr(), redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)


def _spinner() -> Progress:
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    return _progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())


def _print_json(document: Any) -> None:
    print(json.dumps(document), flush=True)


def _upload(client: RtviClient, path: Path, media: MediaKind | None) -> Json:
    """Upload with a bar of bytes sent (on stderr)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file", param_hint="FILE")
    columns = (
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with _progress(TextColumn("uploading {task.description}"), *columns) as progress:
        task = progress.add_task(path.name, total=path.stat().st_size)
        record = client.upload(
            path, media.value if media else None, lambda sent: progress.update(task, completed=sent)
        )
    return dict(record)


def _stream_description(url: str) -> str:
    """A description the service accepts, made from a URL's host and path."""
    from urllib.parse import urlsplit

    from rtvi.naming import STREAM_TEXT_CHARS

    parts = urlsplit(url)
    described = re.sub(rf"[^{STREAM_TEXT_CHARS}]", " ", f"{parts.hostname or ''}{parts.path}")
    return described.strip()[:256] or "rtsp"


def _target(client: RtviClient, source: str, media: MediaKind | None) -> Target:
    """FILE: uploaded; http(s):// or s3://: fetched by the service; rtsp://: a live stream, registered
    unless one with this URL already is (so running a camera twice does not register it twice)."""
    scheme = source.partition("://")[0].lower() if "://" in source else ""
    if scheme == "rtsp":
        public = public_url(source)  # as the service stores and lists it
        known = [s for s in client.streams() if s.get("liveStreamUrl") == public]
        stream_id = known[0]["id"] if known else client.add_stream(source, _stream_description(source))
        return Target(stream_id, public, live=True)
    if scheme in ("http", "https", "s3"):
        with _stderr().status(f"the service is fetching {source}"):
            record = client.register_url(source, media.value if media else None)
        return Target(record["id"], record["filename"] or source)
    if scheme:
        raise typer.BadParameter(f"unsupported URL scheme {scheme!r} (rtsp, http(s), s3 or a file)")
    path = Path(source)
    uploaded = _upload(client, path, media)
    return Target(str(uploaded["id"]), path.name)


def _chunks(n: int) -> str:
    return f"{n} chunk" if n == 1 else f"{n} chunks"


def _times(chunk: Json) -> str:
    return f"{chunk.get('start_time', '')}-{chunk.get('end_time', '')}"


def _generate(
    client: RtviClient,
    target: Target,
    events: Events,
    stop_path: str,
    verb: str,
    on_chunk: Callable[[int, Json], None],
) -> str | None:
    """Drive a generation with a spinner on stderr, calling on_chunk(index, chunk) as chunks arrive.
    A live stream runs until Ctrl-C, which stops its generation (the stream stays registered).
    -> the request id."""
    request_id: str | None = None
    count = 0
    with _spinner() as progress:
        task = progress.add_task(f"{verb} {target.name}")
        try:
            for event in events:
                request_id = event.get("id", request_id)
                for chunk in event.get("chunk_responses") or []:
                    on_chunk(count, chunk)
                    count += 1
                    progress.update(
                        task, description=f"{verb} {target.name}: {_chunks(count)}, to {chunk['end_time']}"
                    )
        except KeyboardInterrupt:
            if not target.live:
                raise
            events.close()
            client.stop(stop_path, target.id)
            progress.update(task, description=f"stopped {target.name} after {_chunks(count)}")
        else:
            progress.update(task, description=f"{verb} {target.name}: {_chunks(count)}, done")
    if target.live:
        typer.echo(
            f"stream {target.id} stays registered (`rtvi streams rm {target.id}` removes it)", err=True
        )
    return request_id


@dataclass(frozen=True, slots=True)
class Generation:
    """What `embed` and `caption` are asked to run: a source, its media type, a model (None: the
    service's), the generate path (also where a live run is stopped) and the verb shown while it runs."""

    source: str
    media: MediaKind | None
    model: str | None
    path: str
    verb: str


def _run_generation(
    opts: Options,
    job: Generation,
    start: Callable[[RtviClient, str, str], Events],
    on_chunk: Callable[[Target, int, Json], None],
) -> tuple[Target, str, str | None]:
    """Resolve the model, bring the source to the service, start the generation with
    start(client, asset id, model id) and drive it. -> (target, model id, request id)."""
    with _session(opts) as client:
        model_id = job.model or client.default_model()  # first: a wrong URL or key fails before an upload
        target = _target(client, job.source, job.media)
        events = start(client, target.id, model_id)
        request_id = _generate(
            client, target, events, job.path, job.verb, lambda i, chunk: on_chunk(target, i, chunk)
        )
    return target, model_id, request_id


# --- client commands ---------------------------------------------------------------------------------
@app.command()
def upload(
    file: Annotated[Path, typer.Argument(help="A video or an image.", dir_okay=False)],
    media_type: MediaOpt = None,
    url: ServiceUrl = DEFAULT_URL,
    api_key: ApiKey = "",
    as_json: AsJson = False,
) -> None:
    """Upload a file (POST /v1/files) with a progress bar; prints its id."""
    opts = Options(url, api_key, as_json)
    with _session(opts) as client:
        record = _upload(client, file, media_type)
    if opts.json:
        _print_json(record)
    else:
        print(f"{record['id']}  {record['filename']}  {record['bytes']} bytes", flush=True)


@app.command()
def embed(
    source: SourceArg,
    chunk: ChunkOpt = 10,
    model: ModelOpt = None,
    media_type: MediaOpt = None,
    url: ServiceUrl = DEFAULT_URL,
    api_key: ApiKey = "",
    as_json: AsJson = False,
) -> None:
    """Embed a video or image chunk by chunk (embedding service); an rtsp:// stream runs until Ctrl-C.

    The service indexes every chunk, so `rtvi search` finds it afterwards."""
    from rtvi.client import EMBED_PATH

    opts = Options(url, api_key, as_json)
    chunks: list[Json] = []

    def on_chunk(target: Target, index: int, chunk_: Json) -> None:
        row = {"chunk_idx": index, **chunk_}
        if target.live and opts.json:
            _print_json({"id": target.id, **row})  # JSON Lines: one chunk per line, as they come
        elif target.live:
            print(_embed_line(row), flush=True)
        else:
            chunks.append(row)

    target, model_id, request_id = _run_generation(
        opts,
        Generation(source, media_type, model, EMBED_PATH, "embedding"),
        lambda client, asset_id, model_id: client.embed(asset_id, model_id, chunk),
        on_chunk,
    )
    if target.live:
        return
    if opts.json:
        _print_json(
            {
                "id": target.id,
                "source": target.name,
                "model": model_id,
                "request_id": request_id,
                "chunks": chunks,
            }
        )
        return
    from rich.table import Table

    _stdout().print(f"{target.name}  {target.id}")
    table = Table("chunk_idx", "start", "end", "dims")
    for row in chunks:
        table.add_row(
            str(row["chunk_idx"]), str(row["start_time"]), str(row["end_time"]), str(len(row["embeddings"]))
        )
    _stdout().print(table)


def _id_column(ids: Iterable[str]) -> Column:
    """Ids are what other commands take: never wrapped or cut, even in an 80-column pipe."""
    from rich.table import Column

    return Column("id", no_wrap=True, min_width=max(map(len, ids), default=2))


def _embed_line(row: Json) -> str:
    return f"{row['chunk_idx']:>5}  {row['start_time']}  {row['end_time']}  {len(row['embeddings'])} dims"


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in words.")],
    top: Annotated[int, typer.Option("--top", help="How many hits (1-100).")] = 5,
    asset: Annotated[
        list[str] | None, typer.Option("--asset", help="Only this file id (repeatable).")
    ] = None,
    stream: Annotated[
        list[str] | None, typer.Option("--stream", help="Only this stream id (repeatable).")
    ] = None,
    url: ServiceUrl = DEFAULT_URL,
    api_key: ApiKey = "",
    as_json: AsJson = False,
) -> None:
    """Search every indexed chunk by text (POST /v1/search), best first."""
    opts = Options(url, api_key, as_json)
    with _session(opts) as client:
        hits = client.search(query, top, asset, stream)
    if opts.json:
        _print_json(hits)
        return
    from rich.table import Table

    table = Table("rank", "score", "source", "start-end", "caption")
    table.columns[2].no_wrap = True
    for rank, hit in enumerate(hits, 1):
        table.add_row(
            str(rank), f"{hit['score']:.4f}", hit["source"], _times(dict(hit)), hit.get("caption") or ""
        )
    _stdout().print(table)


@app.command()
def caption(
    source: SourceArg,
    prompt: Annotated[str, typer.Option("--prompt", help="What to ask about each chunk.")],
    chunk: ChunkOpt = 10,
    model: ModelOpt = None,
    media_type: MediaOpt = None,
    url: ServiceUrl = DEFAULT_URL,
    api_key: ApiKey = "",
    as_json: AsJson = False,
) -> None:
    """Caption a video chunk by chunk (VLM service), printing each caption as it arrives."""
    from rtvi.client import CAPTION_PATH

    opts = Options(url, api_key, as_json)
    chunks: list[Json] = []

    def on_chunk(target: Target, index: int, chunk_: Json) -> None:
        if opts.json and target.live:
            _print_json({"id": target.id, **chunk_})
        elif opts.json:
            chunks.append(chunk_)
        else:
            print(f"[{_times(chunk_)}] {chunk_.get('content', '')}", flush=True)

    target, model_id, request_id = _run_generation(
        opts,
        Generation(source, media_type, model, CAPTION_PATH, "captioning"),
        lambda client, asset_id, model_id: client.caption(asset_id, model_id, prompt, chunk),
        on_chunk,
    )
    if opts.json and not target.live:
        _print_json(
            {
                "id": target.id,
                "source": target.name,
                "model": model_id,
                "prompt": prompt,
                "request_id": request_id,
                "chunks": chunks,
            }
        )


@app.command()
def reindex(
    chunk: ChunkOpt = 10,
    url: ServiceUrl = DEFAULT_URL,
    api_key: ApiKey = "",
    as_json: AsJson = False,
) -> None:
    """Re-embed every stored file with the service's current model (search then finds them with it).

    The service indexes each result into the current model's collection; a new MODEL_PATH starts an
    empty one, so this is how a model change is indexed."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from rtvi.client import ApiError, GenerationFailed

    opts = Options(url, api_key, as_json)
    done: list[Json] = []
    failed: list[Json] = []
    with _session(opts) as client:
        model_id = client.default_model()
        files = client.files()
        columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with _progress(TextColumn("reindexing {task.description}"), *columns) as progress:
            task = progress.add_task("", total=len(files))
            for f in files:
                progress.update(task, description=f["filename"])
                # An image is one chunk: chunking does not apply to it.
                seconds = chunk if f["media_type"] == "video" else 0
                row: Json = {"id": f["id"], "filename": f["filename"], "media_type": f["media_type"]}
                try:
                    events = client.embed(f["id"], model_id, seconds)
                    row["chunks"] = sum(len(e.get("chunk_responses") or []) for e in events)
                    done.append(row)
                except (ApiError, GenerationFailed) as exc:
                    failed.append({**row, "error": str(exc)})
                progress.advance(task)
            progress.update(task, description="done")
    if opts.json:
        _print_json({"model": model_id, "files": done, "failed": failed})
    else:
        from rich.table import Table

        table = Table(
            _id_column(row["id"] for row in done),
            "file",
            "media",
            "chunks",
            title=f"re-embedded with {model_id}",
        )
        for row in done:
            table.add_row(row["id"], row["filename"], row["media_type"], str(row["chunks"]))
        _stdout().print(table)
        for row in failed:
            typer.echo(f"error: {row['filename']} ({row['id']}): {row['error']}", err=True)
    if failed:
        raise typer.Exit(1)


# --- streams -------------------------------------------------------------------------------------------
@streams_app.command("add")
def streams_add(
    stream_url: Annotated[str, typer.Argument(metavar="URL", help="rtsp://[user:password@]host[:port]/path")],
    name: Annotated[str | None, typer.Option("--name", help="A description (default: from the URL).")] = None,
    url: ServiceUrl = DEFAULT_URL,
    api_key: ApiKey = "",
    as_json: AsJson = False,
) -> None:
    """Register a live stream (the service connects once to check it); prints its id."""
    opts = Options(url, api_key, as_json)
    with _session(opts) as client, _stderr().status(f"adding {public_url(stream_url)}"):
        stream_id = client.add_stream(stream_url, name or _stream_description(stream_url))
    if opts.json:
        _print_json({"id": stream_id})
    else:
        print(stream_id, flush=True)


@streams_app.command("ls")
def streams_ls(url: ServiceUrl = DEFAULT_URL, api_key: ApiKey = "", as_json: AsJson = False) -> None:
    """List the registered live streams."""
    opts = Options(url, api_key, as_json)
    with _session(opts) as client:
        streams = client.streams()
    if opts.json:
        _print_json(streams)
        return
    from rich.table import Table

    table = Table(_id_column(s["id"] for s in streams), "url", "description", "chunk (s)")
    for s in streams:
        chunk = s.get("chunk_duration") or 0
        table.add_row(
            s["id"], s.get("liveStreamUrl", ""), s.get("description", ""), f"{chunk:g}" if chunk else "-"
        )
    _stdout().print(table)


@streams_app.command("rm")
def streams_rm(
    stream_id: Annotated[str, typer.Argument(metavar="ID", help="The stream's id (see `rtvi streams ls`).")],
    url: ServiceUrl = DEFAULT_URL,
    api_key: ApiKey = "",
    as_json: AsJson = False,
) -> None:
    """Remove a live stream (its generation stops, its search entries go)."""
    opts = Options(url, api_key, as_json)
    with _session(opts) as client:
        client.remove_stream(stream_id)
    if opts.json:
        _print_json({"id": stream_id, "deleted": True})
    else:
        print(f"removed {stream_id}", flush=True)
