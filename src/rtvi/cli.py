"""`rtvi` command line: `rtvi serve embed --host H --port P`."""

from __future__ import annotations

import logging
from enum import StrEnum

import typer

app = typer.Typer(help="rtvi: real-time video intelligence services (RTVI v1 API).", no_args_is_help=True)


class ServiceName(StrEnum):
    embed = "embed"


@app.callback()
def main() -> None:
    """rtvi command line."""


@app.command()
def serve(
    service: ServiceName = typer.Argument(ServiceName.embed, help="Which service to run."),
    host: str | None = typer.Option(None, help="Bind address (default: BACKEND_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default: BACKEND_PORT or 8000)."),
) -> None:
    """Start a service on the configured model."""
    import uvicorn

    from rtvi.api.app import create_app
    from rtvi.settings import Settings

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper() or "INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    application = create_app(service.value, settings)
    uvicorn.run(
        application,
        host=host or settings.backend_host,
        port=port or settings.backend_port,
        log_level=(settings.log_level or "info").lower(),
    )
