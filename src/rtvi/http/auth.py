"""Bearer-token auth (RTVI_API_KEY): every route but the probes and docs needs it when a key is set
(the reference declares auth but never enforces it)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from rtvi.http.errors import Unauthorized, error_response

# Probes and docs stay open, so orchestrators need no secret.
PUBLIC_PATHS = frozenset(
    {"/v1/ready", "/v1/live", "/v1/startup", "/v1/metadata", "/v1/version", "/docs", "/openapi.json"}
)


def require_bearer_token(app: FastAPI, api_key: str) -> None:
    expected = f"Bearer {api_key}".encode()

    @app.middleware("http")
    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path not in PUBLIC_PATHS:
            got = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(got, expected):
                return error_response(Unauthorized("Missing or invalid bearer token"))
        return await call_next(request)
