"""One exception type for every API failure, and the handlers that render the spec's {code, message}."""

from __future__ import annotations

import contextlib
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024


class ApiError(Exception):
    """A failure with the HTTP status and the `code` of spec §0.1."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    # Shorthands for the codes used in many places.
    @classmethod
    def bad_parameters(cls, message: str) -> ApiError:
        return cls(400, "BadParameters", message)

    @classmethod
    def no_such_resource(cls, asset_id: object) -> ApiError:
        return cls(400, "BadParameter", f"No such resource {asset_id}")

    @classmethod
    def invalid_file(cls, message: str = "File does not seem to be a valid video/image file") -> ApiError:
        return cls(400, "InvalidFile", message)


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message[:MAX_MESSAGE]}


def _validation_message(exc: RequestValidationError) -> str:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    message = f"{loc}: {err.get('msg', 'invalid')}"
    if err.get("type") not in ("missing", "extra_forbidden") and "input" in err:
        with contextlib.suppress(TypeError, ValueError):
            message += f" (input: {json.dumps(err['input'], default=str)[:200]})"
    return message


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("InvalidParameters", _validation_message(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        return JSONResponse(error_body(detail, detail), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        return JSONResponse(
            error_body("InternalServerError", "An internal server error occurred"), status_code=500
        )


def json_error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)
