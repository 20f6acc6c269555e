"""The web page at /ui: upload, timelines of chunk thumbnails, live streams, search (issue 12).

Plain HTML, CSS and one ES module under assets/, served by the service itself (no build step, no CDN:
users run it offline). The shell holds no data, so it is public; the page calls the API like any client,
with the API key it asks for once (kept in sessionStorage).
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from rtvi.http.auth import UI_PATH

ASSETS = Path(__file__).parent / "assets"


def mount(app: FastAPI, service: str) -> None:
    page = (ASSETS / "index.html").read_text().replace("{{service}}", html.escape(service))

    @app.get(UI_PATH, include_in_schema=False)
    async def ui_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    app.mount(f"{UI_PATH}/assets", StaticFiles(directory=ASSETS), name="ui-assets")
