"""The rules of remote ingestion and camera hosts: which addresses may be fetched from, S3 URL forms,
asset names, the header rules and the camera allowlist (no network beyond this machine)."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest

from rtvi.core.assets.remote import RemoteFetcher, check_address, parse_s3_url, safe_name
from rtvi.core.assets.store import AssetStore
from rtvi.core.pipeline.live_jobs import LiveManager
from rtvi.core.streams import LiveStreams
from rtvi.core.telemetry.metrics import Metrics
from rtvi.errors import Forbidden, InvalidParameters, MalformedRequest
from rtvi.settings import Settings

ALLOWED = frozenset({"nas.local", "10.1.2.3"})


@pytest.mark.parametrize(
    ("address", "host", "allowed"),
    [
        ("8.8.8.8", "dns.google", True),
        ("2001:4860:4860::8888", "dns.google", True),
        ("127.0.0.1", "nas.local", False),  # loopback: never, even for a listed host
        ("::1", "nas.local", False),
        ("::ffff:127.0.0.1", "x", False),  # IPv4-mapped loopback
        ("169.254.169.254", "nas.local", False),  # cloud metadata: link-local
        ("224.0.0.1", "x", False),
        ("0.0.0.0", "x", False),
        ("0.1.2.3", "x", False),
        ("240.0.0.1", "x", False),
        ("10.1.2.3", "10.1.2.3", True),  # private, but listed
        ("10.9.9.9", "nas.example", False),  # private, not listed
        ("192.168.1.10", "nas.local", True),
        ("172.16.0.1", "other", False),
        ("100.64.0.1", "other", False),  # CGNAT
        ("fd00::1", "other", False),  # ULA
        ("192.0.2.2", "other", False),  # documentation range: not global
    ],
)
def test_address_rules(address: str, host: str, allowed: bool) -> None:
    why = check_address(ipaddress.ip_address(address), host, ALLOWED)
    assert (why is None) == allowed, why


def test_s3_url_forms() -> None:
    assert parse_s3_url("s3://cams/dock/a%20b.mp4") == ("cams", "dock/a b.mp4")
    assert parse_s3_url("https://cams.s3.us-west-2.amazonaws.com/dock/a.mp4") == ("cams", "dock/a.mp4")
    assert parse_s3_url("https://cams.s3.amazonaws.com/a.mp4") == ("cams", "a.mp4")
    assert parse_s3_url("https://s3.eu-central-1.amazonaws.com/cams/dock/a.mp4") == ("cams", "dock/a.mp4")
    for bad in ("s3://cams", "s3:///key", "https://s3.amazonaws.com/cams"):
        with pytest.raises(InvalidParameters):
            parse_s3_url(bad)


def test_asset_names_from_urls() -> None:
    assert safe_name("/videos/dock%20cam.mp4", None) == "dock_cam.mp4"
    assert safe_name("/../../etc/passwd", None) == "passwd"
    assert safe_name("/", "video/mp4") == "download.mp4"
    assert safe_name("/.hidden", None) == "hidden"


def test_header_rules() -> None:
    fetcher = RemoteFetcher(Settings(ASSET_DOWNLOAD_AUTH_TOKENS="media.example=Bearer abc").ingest)  # type: ignore[call-arg]
    assert fetcher._auth_headers("media.example", {}) == {"authorization": "Bearer abc"}
    assert fetcher._auth_headers("other.example", {"X-Api-Key": "k"}) == {"x-api-key": "k"}
    with pytest.raises(MalformedRequest, match="not an allowed header"):
        fetcher._auth_headers("media.example", {"Host": "evil"})
    with pytest.raises(MalformedRequest, match="not allowed"):
        fetcher._auth_headers("media.example", {"cookie": "a\r\nX-Injected: 1"})


def test_redirects_are_clamped() -> None:
    assert Settings(ASSET_DOWNLOAD_MAX_REDIRECTS="50").asset_download_max_redirects == 10  # type: ignore[call-arg]
    assert Settings(ASSET_DOWNLOAD_MAX_REDIRECTS="-3").asset_download_max_redirects == 0  # type: ignore[call-arg]


def _streams(tmp_path: Path, hosts: str) -> LiveStreams:
    settings = Settings(ASSET_STORAGE_DIR=str(tmp_path), RTVI_RTSP_ALLOWED_HOSTS=hosts)  # type: ignore[call-arg]
    metrics = Metrics()
    live = LiveManager(settings.live, metrics, lambda s, m: None)
    store = AssetStore(settings.storage, settings.ingest)
    return LiveStreams(settings.live, store, live, metrics, lambda s, m: None)


def test_camera_host_allowlist(tmp_path: Path) -> None:
    async def verdicts(streams: LiveStreams, urls: list[str]) -> list[bool]:
        out = []
        for url in urls:
            try:
                await streams.check_host(url)
                out.append(True)
            except Forbidden:
                out.append(False)
        return out

    names = _streams(tmp_path / "a", "cam.example")
    urls = ["rtsp://cam.example/s", "rtsp://CAM.example:554/s", "rtsp://other.example/s", "rtsp://10.0.0.1/s"]
    assert asyncio.run(verdicts(names, urls)) == [True, True, False, False]
    nets = _streams(tmp_path / "b", "10.0.0.0/8,127.0.0.1")
    urls = ["rtsp://10.2.3.4/s", "rtsp://192.168.1.1/s", "rtsp://localhost/s", "rtsp://[::1]/s"]
    # localhost resolves (hosts file) to 127.0.0.1 and, where IPv6 is on, ::1, which is not listed.
    got = asyncio.run(verdicts(nets, urls))
    assert got[:2] == [True, False] and got[3] is False
    assert _streams(tmp_path / "c", "").settings.rtsp_allowed_hosts is None  # empty: any host
