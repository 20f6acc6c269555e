"""Bearer-token auth (RTVI_API_KEY): every route but the probes and docs needs it when a key is set
(the reference declares auth but never enforces it). The scheme name is case-insensitive (RFC 7235); a
401 says which scheme it wants; the OpenAPI document declares it, so /docs offers Authorize.

A pure ASGI middleware, not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware hands the route a
receive channel of its own, on which the client's disconnect never arrives, so work behind it would
outlive a client that left (http/limits.unless_disconnected)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

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


class BearerAuth:
    """Answers 401 to an HTTP request for a non-public path without `Authorization: Bearer <api_key>`;
    passes everything else (and the ASGI channels untouched) to the app."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_public(scope["path"]):
            token = bearer_token(Headers(scope=scope).get("authorization", ""))
            if token is None or not hmac.compare_digest(token.encode(), self.expected):
                response = error_response(Unauthorized("Missing or invalid bearer token"))
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def require_bearer_token(app: FastAPI, api_key: str) -> None:
    app.add_middleware(BearerAuth, api_key=api_key)


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
