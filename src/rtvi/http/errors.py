"""Domain errors -> HTTP: the one place that picks a status, and the handlers that render {code, message}."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rtvi.errors import (
    Conflict,
    Forbidden,
    InsufficientStorage,
    InvalidMedia,
    InvalidParameters,
    MalformedRequest,
    NotFound,
    NotSupported,
    RtviError,
    TooLarge,
    Unavailable,
)
from rtvi.http.protocol import ServiceError

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024
# Most specific class first: NoSuchResource is an InvalidParameters, InUse a Conflict.
STATUS: tuple[tuple[type[RtviError], int], ...] = (
    (InvalidParameters, 400),
    (InvalidMedia, 400),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (TooLarge, 413),
    (MalformedRequest, 422),
    (NotSupported, 501),
    (Unavailable, 503),
    (InsufficientStorage, 507),
)


# Declared on every operation in the OpenAPI document: what a client may get back besides success.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ServiceError, "description": description}
    for status, description in (
        (400, "Bad parameters, an unknown id, or media that cannot be read"),
        (401, "Missing or invalid bearer token (when RTVI_API_KEY is set)"),
        (403, "A server path or URL outside what is allowed"),
        (404, "Not found"),
        (409, "The id is taken, or the resource is in use"),
        (413, "A body, upload or download over its limit"),
        (422, "The request does not fit the schema"),
        (500, "An internal error"),
        (501, "Not implemented"),
        (503, "The model is loading or failed to load, or a dependency is gone"),
        (507, "The asset store is full"),
    )
}


class Unauthorized(RtviError):
    """A missing or wrong bearer token: only the web layer has such a thing."""

    code = "Unauthorized"


def http_status(exc: RtviError) -> int:
    if isinstance(exc, Unauthorized):
        return 401
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def status_code_name(status: int) -> str:
    """404 -> "NotFound", 405 -> "MethodNotAllowed": an HTTP status as an error code (letters only)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "Error"
    return "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z]+", phrase) if w) or "Error"


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message[:MAX_MESSAGE]}


def error_response(exc: RtviError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message), status_code=http_status(exc))


def body_validation_error(exc: ValidationError, loc: tuple[str, ...] = ()) -> RequestValidationError:
    """A model validated by hand, reported exactly like FastAPI reports a body: loc ('body', *loc, field)."""
    return RequestValidationError([{**e, "loc": ("body", *loc, *e["loc"])} for e in exc.errors()])


def _validation_message(exc: RequestValidationError) -> str:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    message = f"{loc}: {err.get('msg', 'invalid')}"
    # The input is echoed unless it may hold a secret: a whole body (a model-level check), an alert
    # action (a webhook URL carries its token) or a picture.
    sensitive = len(loc) <= 1 or bool({"actions", "secret", "url", "image"} & {str(p) for p in loc})
    if err.get("type") not in ("missing", "extra_forbidden") and "input" in err and not sensitive:
        with contextlib.suppress(TypeError, ValueError):
            message += f" (input: {json.dumps(err['input'], default=str)[:200]})"
    return message


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RtviError)
    async def _domain_error(_: Request, exc: RtviError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("InvalidParameters", _validation_message(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own errors (404 route, 405 method, a form with too many fields): the code is the
        # status phrase in letters only, as the contract requires; the detail is the message.
        body = error_body(status_code_name(exc.status_code), str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        return JSONResponse(
            error_body("InternalServerError", "An internal server error occurred"), status_code=500
        )
