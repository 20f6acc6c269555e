"""`rtvi` command line: `rtvi serve NAME --host H --port P`, NAME being any service under rtvi/services."""

from __future__ import annotations

import logging

import typer

from rtvi import services

app = typer.Typer(help="rtvi: real-time video intelligence services (RTVI v1 API).", no_args_is_help=True)


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
    from rtvi.settings import Settings

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper() or "INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    application = build_app(services.load_spec(service), settings)
    uvicorn.run(
        application,
        host=host or settings.backend_host,
        port=port or settings.backend_port,
        log_level=(settings.log_level or "info").lower(),
    )
