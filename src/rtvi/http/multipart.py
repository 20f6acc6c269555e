"""Streaming multipart parser for uploads: file bytes go straight to the asset store's tmp directory.

Starlette's own form parser spools uploads to the system temp dir and keeps no size limit, so a large
upload would be written twice and could fill the disk. Here the file part is written once, into a
temporary directory on the same filesystem as the store (so committing it is a rename), and the size
limit is enforced while the bytes arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from rtvi.errors import InvalidParameters, MalformedRequest, RtviError, TooLarge

MAX_FIELDS = 1000  # Starlette's cap; the reference returns 400 past it
MAX_FIELD_BYTES = 64 * 1024


@dataclass(slots=True)
class UploadedFile:
    path: Path
    filename: str
    size: int


@dataclass(slots=True)
class ParsedForm:
    fields: dict[str, str] = field(default_factory=dict)
    file: UploadedFile | None = None


async def read_form(request: Request, tmp_dir: Path, max_file_bytes: int) -> ParsedForm:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise InvalidParameters("multipart body without a boundary", "InvalidParameters")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_file_bytes + MAX_FIELDS * MAX_FIELD_BYTES:
            raise _too_large(max_file_bytes)
        return await _read_multipart(request, boundary, tmp_dir, max_file_bytes)
    if content_type in (b"application/x-www-form-urlencoded", b""):
        form = await request.form(max_fields=MAX_FIELDS, max_files=0)
        return ParsedForm(fields={k: v for k, v in form.items() if isinstance(v, str)})
    raise MalformedRequest("expected a multipart/form-data or application/x-www-form-urlencoded body")


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"Upload is larger than the limit of {limit} bytes")


class _MultipartSink:
    """Callbacks for MultipartParser: collects text fields, writes the one file part to disk."""

    def __init__(self, tmp_dir: Path, max_file_bytes: int) -> None:
        self.tmp_dir = tmp_dir
        self.max_file_bytes = max_file_bytes
        self.form = ParsedForm()
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._buffer = bytearray()
        self._out: IO[bytes] | None = None
        self._size = 0
        self._fields = 0

    def on_part_begin(self) -> None:
        self._headers = {}
        self._buffer.clear()
        self._fields += 1
        if self._fields > MAX_FIELDS:
            raise InvalidParameters(
                f"Too many fields. Maximum number of fields is {MAX_FIELDS}.", "TooManyFields"
            )

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = opts.get(b"name", b"").decode("utf-8", "replace")
        filename = opts.get(b"filename")
        if filename is None:
            return
        if self.form.file is not None or self._name != "file":
            raise MalformedRequest("exactly one file part named 'file' is allowed")
        name = filename.decode("utf-8", "replace")
        # The client's name is only metadata: it is validated later and never used as a path here.
        self.form.file = UploadedFile(path=self.tmp_dir / "upload.bin", filename=name, size=0)
        self._out = open(self.form.file.path, "wb")  # noqa: SIM115 - closed in on_part_end / close()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._out is not None:
            self._size += end - start
            if self._size > self.max_file_bytes:
                raise _too_large(self.max_file_bytes)
            self._out.write(data[start:end])
        else:
            self._buffer += data[start:end]
            if len(self._buffer) > MAX_FIELD_BYTES:
                raise TooLarge(f"form field '{self._name}' is too large", "FieldTooLarge")

    def on_part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
            assert self.form.file is not None
            self.form.file.size = self._size
        else:
            self.form.fields[self._name] = self._buffer.decode("utf-8", "replace")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


async def _read_multipart(
    request: Request, boundary: bytes, tmp_dir: Path, max_file_bytes: int
) -> ParsedForm:
    sink = _MultipartSink(tmp_dir, max_file_bytes)
    parser = MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": sink.on_part_begin,
            "on_header_field": sink.on_header_field,
            "on_header_value": sink.on_header_value,
            "on_header_end": sink.on_header_end,
            "on_headers_finished": sink.on_headers_finished,
            "on_part_data": sink.on_part_data,
            "on_part_end": sink.on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except RtviError:
        await _drain(request)
        raise
    except Exception as exc:  # the parser's own errors: a malformed body
        raise InvalidParameters(f"malformed multipart body: {exc}", "InvalidParameters") from exc
    finally:
        sink.close()
    return sink.form


DRAIN_LIMIT = 1 << 30


async def _drain(request: Request) -> None:
    """Read (and drop) the rest of a refused body, so the client gets our 4xx instead of a reset socket."""
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                return
    except Exception:  # the client went away; nothing to do
        return
