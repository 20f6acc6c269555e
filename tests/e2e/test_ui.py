"""The web page (/ui) and the API docs (/docs) in a real browser: Debian's chromium driven by
Playwright. The page uploads through its own form, lists the file, fills the timeline, searches, shows
thumbnails and plays the moment; with an API key it asks once; nothing is loaded from outside the service."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import test_alerts
from tests.e2e.test_streams import cv_body
from tests.e2e.test_vlm import ALERT
from tests.rtsp_server import RtspServer, gst_available
from tests.servers import RtviServer, free_port

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (make browser-deps)"
)
KEY = "ui-test-key"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A browser tab on one service that records page errors and every URL it requests."""

    def __init__(self, browser: Any, server: RtviServer) -> None:
        self.server = server
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, path: str = "/ui") -> Any:
        self.page.goto(self.server.url + path)
        return self.page

    def foreign_requests(self) -> list[str]:
        own = (self.server.url + "/", "data:", "blob:")
        return [u for u in self.requests if not u.startswith(own)]

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    srv = RtviServer(tmp_path_factory.mktemp("ui") / "assets").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    srv = RtviServer(tmp_path_factory.mktemp("ui-key") / "assets", env={"RTVI_API_KEY": KEY}).start()
    yield srv
    srv.stop()


def upload_through_page(page: Any, clip: Path) -> str:
    """Upload with the page's form; wait until processed. -> the file's id, as the page lists it."""
    page.wait_for_selector("body[data-ready=true]")
    page.set_input_files("#file", str(clip))
    page.click("#upload-form button[type=submit]")
    page.wait_for_function(
        "document.querySelector('#upload-status').textContent.includes('searchable')", timeout=90_000
    )
    assert page.locator("#upload-progress").evaluate("p => p.value") == 1  # the bar reached the end
    item = page.locator("#file-list li", has_text=clip.name)
    assert item.count() == 1
    return str(item.get_attribute("data-file-id"))


def search_through_page(page: Any, query: str) -> Any:
    page.fill("input[type=search]", query)
    page.press("input[type=search]", "Enter")
    page.wait_for_function("document.querySelector('#search-status').textContent.includes('moment')")
    return page.locator("#results li.result")


def images_loaded(page: Any, selector: str) -> None:
    page.wait_for_function(
        f"[...document.querySelectorAll({selector!r})].every(i => i.complete && i.naturalWidth > 0)"
    )


def test_upload_search_and_play(browser: Any, ui_server: RtviServer, media: dict[str, Path]) -> None:
    tab = Page(browser, ui_server)
    page = tab.open()
    file_id = upload_through_page(page, media["three_scenes"])
    # The timeline: one thumbnail per 10 s chunk, in time order.
    cards = page.locator("#timeline figure.chunk")
    assert [cards.nth(i).get_attribute("data-start-time") for i in range(cards.count())] == [
        "0.0",
        "10.0",
        "20.0",
    ]
    images_loaded(page, "#timeline img")

    results = search_through_page(page, "a rocket")
    first = results.first
    assert (first.get_attribute("data-asset-id"), first.get_attribute("data-start-time")) == (file_id, "10.0")
    assert "three_scenes.mp4" in first.inner_text()
    images_loaded(page, "#results img")

    first.click()  # plays the file from the moment
    page.wait_for_function("document.querySelector('#player').currentTime >= 10", timeout=20_000)
    assert page.evaluate("document.querySelector('#player').error") is None
    assert page.locator("#player").get_attribute("data-asset-id") == file_id
    assert not tab.errors, tab.errors
    assert not tab.foreign_requests(), tab.foreign_requests()
    tab.close()


def test_with_an_api_key_the_page_asks_once(
    browser: Any, keyed_server: RtviServer, media: dict[str, Path]
) -> None:
    tab = Page(browser, keyed_server)
    page = tab.open()
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    page.fill("#api-key", "wrong-key")
    page.click("#key-form button")
    page.wait_for_selector("#key-error:not([hidden])")  # refused: asked again, saying so
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    file_id = upload_through_page(page, media["cat_rocket"])
    first = search_through_page(page, "a cat").first
    assert first.get_attribute("data-asset-id") == file_id
    images_loaded(page, "#results img")  # thumbnails come through fetch with the key

    page.reload()  # the key is kept for the session: no dialog the second time
    page.wait_for_selector("body[data-ready=true]")
    assert not dialog.is_visible()
    assert page.locator("#file-list li", has_text="cat_rocket.mp4").count() == 1
    assert not tab.errors, tab.errors
    assert not [u for u in tab.requests if KEY in u]  # the key never travels in a URL
    tab.close()


def test_the_page_shell_is_public_but_the_api_is_not(keyed_server: RtviServer) -> None:
    assert httpx.get(keyed_server.url + "/ui").status_code == 200
    assert httpx.get(keyed_server.url + "/ui/assets/app.js").status_code == 200
    assert httpx.get(keyed_server.url + "/v1/search/chunks", params={"asset_id": "x"}).status_code == 401
    # A path that merely starts like the shell's is not let through.
    assert httpx.get(keyed_server.url + "/ui/assets/../../v1/files?purpose=vision").status_code in (401, 404)


def test_api_docs_render_offline(browser: Any, ui_server: RtviServer) -> None:
    tab = Page(browser, ui_server)
    # Offline: anything not served by the service itself fails.
    tab.context.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(ui_server.url) else route.abort(),
    )
    page = tab.open("/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)  # operations rendered
    assert "RTVI Embed Microservice API" in page.locator(".swagger-ui .info .title").inner_text()
    assert page.locator(".swagger-ui .opblock-summary-path", has_text="/v1/search").count() >= 1
    assert not tab.foreign_requests(), tab.foreign_requests()
    tab.close()


@pytest.fixture(scope="module")
def vlm_ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    srv = RtviServer(tmp_path_factory.mktemp("ui-vlm") / "assets", service="vlm").start()
    yield srv
    srv.stop()


def test_on_the_vlm_service_captions_and_alerts_fill_the_timeline(
    browser: Any, vlm_ui_server: RtviServer, media: dict[str, Path]
) -> None:
    tab = Page(browser, vlm_ui_server)
    page = tab.open()
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#prompt", ALERT)
    file_id = upload_through_page(page, media["cat_rocket"])
    cards = page.locator("#timeline figure.chunk")
    assert cards.count() == 2
    first, second = (cards.nth(i) for i in range(2))
    assert "cat" in first.locator(".caption").inner_text()
    assert "alert" in str(first.get_attribute("class")) and "alert" not in str(second.get_attribute("class"))
    images_loaded(page, "#timeline img")
    best = search_through_page(page, "Anomaly Detected: Yes, a cat").first  # captions are what is searched
    assert (best.get_attribute("data-asset-id"), best.get_attribute("data-start-time")) == (file_id, "0.0")
    assert not tab.errors, tab.errors
    tab.close()


# --- cameras, alert rules and the live incident feed (with an API key: SSE and thumbnails through fetch) ---
needs_rtsp = pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server missing: run `make rtsp-deps`")


person_clip = test_alerts.person_clip  # the camera's clip: coffee, a person for 8 s, coffee again


@pytest.fixture(scope="module")
def alert_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    env = test_alerts.alert_env(RTVI_API_KEY=KEY)
    srv = RtviServer(tmp_path_factory.mktemp("ui-alerts") / "assets", env=env).start()
    yield srv
    srv.stop()


def keyed_client(server: RtviServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {KEY}"})


def keyed_tab(browser: Any, server: RtviServer) -> tuple[Page, Any]:
    """A tab whose session already holds the key (the dialog itself is tested above)."""
    tab = Page(browser, server)
    tab.context.add_init_script(f"sessionStorage.setItem('rtvi-api-key', {KEY!r})")
    page = tab.open()
    page.wait_for_selector("body[data-ready=true]")
    return tab, page


def check_clean(tab: Page) -> None:
    assert not tab.errors, tab.errors
    assert not tab.foreign_requests(), tab.foreign_requests()
    tab.close()


@needs_rtsp
def test_cameras_and_rules_through_the_page(browser: Any, alert_server: RtviServer, tmp_path: Path) -> None:
    camera = RtspServer(free_port(), tmp_path).start()
    tab, page = keyed_tab(browser, alert_server)
    try:
        with keyed_client(alert_server) as c:
            page.fill("#stream-url", camera.url)
            page.fill("#stream-name", "Loading dock")
            page.click("#stream-form button[type=submit]")
            stream = page.locator("#stream-list li[data-stream-id]", has_text="Loading dock")
            stream.wait_for(timeout=30_000)
            stream_id = str(stream.get_attribute("data-stream-id"))
            assert "Loading dock added" in page.locator("#stream-status").inner_text()

            # A rule on that camera: the form's stream choice lists it.
            page.fill("#rule-name", "person at the dock")
            page.fill("#rule-query", "a person")
            page.select_option("#rule-stream", stream_id)
            page.fill("#rule-cooldown", "30")
            page.click("#rule-form button[type=submit]")
            rule = page.locator("#rule-list li[data-rule-id]", has_text="person at the dock")
            rule.wait_for()
            rule_id = str(rule.get_attribute("data-rule-id"))
            stored = c.get(f"/v1/alerts/rules/{rule_id}").json()
            assert (stored["query"], stored["stream_ids"], stored["cooldown_s"]) == (
                "a person",
                [stream_id],
                30,
            )
            assert "Loading dock" in rule.inner_text() and stored["paused"] is False

            rule.get_by_role("button", name="Pause").click()
            page.wait_for_selector(f"#rule-list li[data-rule-id='{rule_id}'][data-paused=true]")
            assert "paused" in rule.locator(".tag").inner_text()
            assert c.get(f"/v1/alerts/rules/{rule_id}").json()["paused"] is True
            rule.get_by_role("button", name="Resume").click()
            page.wait_for_selector(f"#rule-list li[data-rule-id='{rule_id}'][data-paused=false]")
            assert c.get(f"/v1/alerts/rules/{rule_id}").json()["paused"] is False

            rule.get_by_role("button", name="Delete").click()
            rule.wait_for(state="detached")
            assert c.get(f"/v1/alerts/rules/{rule_id}").status_code == 404

            stream.get_by_role("button", name="Remove").click()
            stream.wait_for(state="detached", timeout=30_000)
            assert stream_id not in [s["id"] for s in c.get("/v1/streams/get-stream-info").json()]
        check_clean(tab)
    finally:
        camera.kill()


def test_the_page_shows_why_a_rule_or_camera_is_refused(browser: Any, alert_server: RtviServer) -> None:
    tab, page = keyed_tab(browser, alert_server)
    page.fill("#rule-name", "nothing to watch")
    page.click("#rule-form button[type=submit]")  # no query text
    page.wait_for_selector("#rule-status.error")
    assert "a rule needs a query text" in page.locator("#rule-status").inner_text()
    assert page.locator("#rule-list li[data-rule-id]").count() == 0

    page.fill("#stream-url", f"rtsp://127.0.0.1:{free_port()}/nobody")  # nothing answers there
    page.click("#stream-form button[type=submit]")
    page.wait_for_selector("#stream-status.error", timeout=60_000)
    assert page.locator("#stream-list li[data-stream-id]").count() == 0
    check_clean(tab)


@needs_rtsp
def test_an_incident_appears_live_and_plays_its_moment(
    browser: Any, alert_server: RtviServer, person_clip: Path, tmp_path: Path
) -> None:
    camera = RtspServer(free_port(), tmp_path, file=person_clip).start()
    tab, page = keyed_tab(browser, alert_server)
    try:
        with keyed_client(alert_server) as c:
            r = c.post("/v1/alerts/rules", json={"name": "person", "query": "a person", "cooldown_s": 3600})
            assert r.status_code == 200, r.text
            rule_id = r.json()["id"]
            # The feed is open (subscribed, then listed) before anything happens; the page is not reloaded.
            page.wait_for_function(
                "document.querySelector('#incident-status').textContent.includes('No incidents')"
            )
            page.evaluate("window.notReloaded = true")

            model = c.get("/v1/models").json()["data"][0]["id"]
            body = cv_body("dock", camera.url, metadata={"model": model, "chunk_duration": 2})
            assert c.post("/v1/stream/add", json=body).json()["inference"] is True

            incident = page.locator("#incident-list li.incident")
            incident.first.wait_for(timeout=90_000)
            assert page.evaluate("window.notReloaded") is True
            # Kept before it is published: the service lists what the page shows.
            raised = c.get("/v1/alerts/incidents", params={"rule_id": rule_id}).json()["data"][0]
            assert incident.count() == 1
            assert incident.get_attribute("data-incident-id") == raised["id"]
            assert incident.get_attribute("data-stream-id") == "dock"
            assert "person" in incident.locator("strong").inner_text()
            assert f"{raised['score']:.3f}" in incident.inner_text()
            images_loaded(page, "#incident-list img")  # the thumbnail, fetched with the key

            incident.click()  # the moment: the player opens on that stream's chunk
            page.wait_for_selector("#player-section:not([hidden])")
            assert page.locator("#player").get_attribute("data-stream-id") == "dock"
            assert "live" in page.locator("#player-title").inner_text()
            page.wait_for_function("document.querySelector('#player').poster.startsWith('blob:')")

            gone = {"key": "sensor", "value": {"camera_id": "dock", "change": "camera_remove"}}
            assert c.post("/v1/stream/remove", json=gone).status_code == 200
        check_clean(tab)
    finally:
        camera.kill()
