"""The pure parts of remote ingestion: which addresses may be fetched from, S3 URL forms, asset names,
and the header rules (no network)."""

from __future__ import annotations

import ipaddress

import pytest

from rtvi.core.assets.remote import RemoteFetcher, check_address, parse_s3_url, safe_name
from rtvi.errors import InvalidParameters, MalformedRequest
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
    fetcher = RemoteFetcher(Settings(ASSET_DOWNLOAD_AUTH_TOKENS="media.example=Bearer abc"))  # type: ignore[call-arg]
    assert fetcher._auth_headers("media.example", {}) == {"authorization": "Bearer abc"}
    assert fetcher._auth_headers("other.example", {"X-Api-Key": "k"}) == {"x-api-key": "k"}
    with pytest.raises(MalformedRequest, match="not an allowed header"):
        fetcher._auth_headers("media.example", {"Host": "evil"})
    with pytest.raises(MalformedRequest, match="not allowed"):
        fetcher._auth_headers("media.example", {"cookie": "a\r\nX-Injected: 1"})


def test_redirects_are_clamped() -> None:
    assert Settings(ASSET_DOWNLOAD_MAX_REDIRECTS="50").asset_download_max_redirects == 10  # type: ignore[call-arg]
    assert Settings(ASSET_DOWNLOAD_MAX_REDIRECTS="-3").asset_download_max_redirects == 0  # type: ignore[call-arg]
