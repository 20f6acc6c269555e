"""Bearer-token auth (RTVI_API_KEY): every route but the probes and docs needs it when a key is set
(the reference declares auth but never enforces it). The scheme name is case-insensitive (RFC 7235); a
401 says which scheme it wants; the OpenAPI document declares it, so /docs offers Authorize."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from rtvi.http.errors import Unauthorized, error_response

DOCS_ASSETS = "/docs-assets"  # Swagger UI's scripts and styles
UI_PATH = "/ui"  # the web page's shell and assets: no data (the page asks for the key, then calls the API)
# Probes, docs and the web page's shell stay open, so orchestrators and browsers need no secret.
PUBLIC_PATHS = frozenset(
    {
        "/v1/ready",
        "/v1/live",
        "/v1/startup",
        "/v1/metadata",
        "/v1/version",
        "/v1/license",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
        UI_PATH,
    }
)
PUBLIC_PREFIXES = (DOCS_ASSETS + "/", UI_PATH + "/")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


SCHEME_NAME = "Token"  # the reference's name for its bearer scheme


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (any case of "Bearer"), else None."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_bearer_token(app: FastAPI, api_key: str) -> None:
    expected = api_key.encode()

    @app.middleware("http")
    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not is_public(request.url.path):
            token = bearer_token(request.headers.get("authorization", ""))
            if token is None or not hmac.compare_digest(token.encode(), expected):
                response = error_response(Unauthorized("Missing or invalid bearer token"))
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return await call_next(request)


def declare_bearer_scheme(app: FastAPI) -> None:
    """Add the HTTP bearer scheme to the OpenAPI document, required by every operation (as the
    reference's document does), so clients and /docs know to send a token."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME_NAME] = {
                "type": "http",
                "scheme": "bearer",
            }
            schema["security"] = [{SCHEME_NAME: []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
