"""Remote ingestion (spec §2.3): http(s) with SSRF rules, S3, and data: URIs -> a file in a staging dir.

http(s)
-------
Every hop (the URL and each redirect, at most ASSET_DOWNLOAD_MAX_REDIRECTS) is checked before any byte
is sent: the host name may not contain "localhost" or "metadata"; it is resolved once, and every
address it resolves to must be public (loopback, link-local, multicast, reserved, unspecified and 0/8
are always refused; RFC 1918, CGNAT 100.64/10, IPv6 ULA and the other non-global ranges only for
hosts listed in ASSET_DOWNLOAD_ALLOWED_PRIVATE_HOSTS). The connection then goes to the checked
address itself (Host header and TLS server name stay the original host), so DNS cannot answer
differently a moment later.
No proxy from the environment is used. Auth headers (`url_headers`, ASSET_DOWNLOAD_AUTH_TOKENS) are
sent only over HTTPS and only to the original host. The body streams to disk and stops at the size
limit; the whole download is bounded by ASSET_DOWNLOAD_TOTAL_TIMEOUT.

S3
--
`s3://bucket/key` and AWS virtual-hosted or path-style HTTPS URLs, through boto3 with the environment's
credentials and S3_ENDPOINT_URL / AWS_ENDPOINT_URL_S3.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import mimetypes
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from rtvi import __version__
from rtvi.core.assets.datauri import decode_data_uri
from rtvi.core.net import IPAddress, pinned, resolve
from rtvi.errors import InvalidParameters, MalformedRequest, TooLarge
from rtvi.settings import IngestSettings, csv_set

log = logging.getLogger(__name__)

ALLOWED_HEADER_NAMES = frozenset(
    {"authorization", "x-api-key", "x-jfrog-art-api", "cookie", "accept", "accept-language"}
)
BLOCKED_NAME_PARTS = ("localhost", "metadata")  # covers metadata.google.internal
CGNAT = ipaddress.ip_network("100.64.0.0/10")
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_S3_HOST = re.compile(r"^(?:(?P<bucket>.+)\.)?s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Fetched:
    path: Path  # inside the staging directory
    name: str  # a safe file name for the asset
    size: int


def _refused(url: str, why: str) -> MalformedRequest:
    # The reference answers SSRF refusals as 422 InvalidParameters.
    return MalformedRequest(f"URL {url[:200]!r} is not allowed: {why}")


def check_address(ip: IPAddress, host: str, allowed_private: frozenset[str]) -> str | None:
    """Why an address may not be fetched from, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or ip in THIS_NETWORK
    ):
        return f"{ip} is a loopback, link-local, multicast, reserved or unspecified address"
    if not ip.is_global or ip in CGNAT:  # RFC 1918, CGNAT, ULA, documentation and other local ranges
        if host.lower() in allowed_private:
            return None
        return f"{ip} is not a public address (ASSET_DOWNLOAD_ALLOWED_PRIVATE_HOSTS may list {host!r})"
    return None


def safe_name(raw: str, content_type: str | None, default_stem: str = "download") -> str:
    """A file name for the asset from the URL's last path segment (letters, digits, _ . - only)."""
    name = _SAFE_NAME.sub("_", unquote(raw.rsplit("/", 1)[-1]))[:200].strip("._") or default_stem
    if "." not in name and content_type:
        name += mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
    return name


# A finished download: (source http | s3 | data, succeeded, seconds, bytes written).
DownloadObserver = Callable[[str, bool, float, int], None]


class RemoteFetcher:
    def __init__(self, settings: IngestSettings, on_download: DownloadObserver | None = None) -> None:
        self.settings = settings
        self.max_bytes = int(settings.asset_download_max_file_size_gb * 2**30)
        self._on_download = on_download or (lambda _source, _ok, _s, _n: None)

    async def fetch(self, url: str, dest: Path, headers: Mapping[str, str] | None = None) -> Fetched:
        """Download `url` (http(s), s3 or data:) into the directory `dest`."""
        scheme = url.split(":", 1)[0].lower()
        if scheme == "s3" or (scheme == "https" and _S3_HOST.match(urlsplit(url).hostname or "")):
            source = "s3"
        elif scheme in ("http", "https", "data"):
            source = scheme.removesuffix("s")
        else:
            raise MalformedRequest(f"Unsupported URL scheme {scheme[:20]!r}: use http(s), s3, file or data")
        start = time.perf_counter()
        fetched: Fetched | None = None
        try:
            fetched = await self._fetch(source, url, dest, headers or {})
            return fetched
        finally:
            self._on_download(
                source, fetched is not None, time.perf_counter() - start, fetched.size if fetched else 0
            )

    async def _fetch(self, source: str, url: str, dest: Path, headers: Mapping[str, str]) -> Fetched:
        if source == "data":
            path, _ = await asyncio.to_thread(decode_data_uri, url, dest, "input", self.max_bytes)
            return Fetched(path, path.name, path.stat().st_size)
        if source == "s3":
            return await asyncio.to_thread(self._s3, url, dest)
        try:
            async with asyncio.timeout(self.settings.asset_download_total_timeout_s):
                return await self._http(url, dest, headers)
        except TimeoutError:
            raise InvalidParameters(f"Download of {url[:200]!r} timed out", "DownloadFailed") from None

    # --- http(s) --------------------------------------------------------------------------------
    def _auth_headers(self, host: str, given: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for entry in self.settings.asset_download_auth_tokens.split(";"):
            domain, _, value = entry.partition("=")
            if domain.strip().lower() == host and value.strip():
                out["authorization"] = value.strip()
        for name, value in given.items():
            if name.lower() not in ALLOWED_HEADER_NAMES:
                raise MalformedRequest(f"url_headers: {name[:64]!r} is not an allowed header name")
            if len(value) > 8192 or "\r" in value or "\n" in value:
                raise MalformedRequest(f"url_headers: the value of {name[:64]!r} is not allowed")
            out[name.lower()] = value
        return out

    async def _resolve(self, url: str, host: str, port: int) -> IPAddress:
        lowered = host.lower()
        if any(part in lowered for part in BLOCKED_NAME_PARTS):
            raise _refused(url, f"host {host!r} is blocked")
        try:
            addresses = await resolve(host, port)
        except OSError as exc:
            raise InvalidParameters(f"Cannot resolve {host!r}: {exc}", "DownloadFailed") from exc
        allowed = self.settings.allowed_private_download_hosts
        for ip in addresses:  # every address, so a mixed answer cannot smuggle in a private one
            why = check_address(ip, host, allowed)
            if why:
                raise _refused(url, why)
        return addresses[0]

    async def _http(self, url: str, dest: Path, given_headers: Mapping[str, str]) -> Fetched:
        s = self.settings
        origin = urlsplit(url)
        auth = self._auth_headers((origin.hostname or "").lower(), given_headers)
        skip_verify = csv_set(s.asset_download_ssl_skip_verify_domains)
        timeout = httpx.Timeout(s.asset_download_total_timeout_s, connect=s.asset_download_connect_timeout_s)
        hops = 0
        while True:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _refused(url, "only http(s) URLs with a host can be fetched")
            host = parts.hostname.lower()
            port = parts.port or (443 if parts.scheme == "https" else 80)
            ip = await self._resolve(url, host, port)
            target, headers, extensions = pinned(url, ip)
            headers["user-agent"] = f"rtvi/{__version__}"
            if parts.scheme == "https" and host == (origin.hostname or "").lower():
                headers |= auth  # credentials only over HTTPS, only to the host they were given for
            async with httpx.AsyncClient(
                timeout=timeout, verify=host not in skip_verify, trust_env=False, follow_redirects=False
            ) as client:
                request = client.build_request("GET", target, headers=headers, extensions=extensions)
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise InvalidParameters(
                        f"Download of {url[:200]!r} failed: {exc}", "DownloadFailed"
                    ) from exc
                try:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        hops += 1
                        if hops > s.asset_download_max_redirects:
                            raise InvalidParameters(
                                f"Download of {url[:200]!r} was redirected; redirects allowed: "
                                f"{s.asset_download_max_redirects} (ASSET_DOWNLOAD_MAX_REDIRECTS)",
                                "DownloadFailed",
                            )
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise InvalidParameters(
                            f"Download of {url[:200]!r} failed: HTTP {response.status_code}", "DownloadFailed"
                        )
                    name = safe_name(parts.path, response.headers.get("content-type"))
                    size = await self._save(response, dest / "download.part")
                finally:
                    await response.aclose()
            return Fetched(dest / "download.part", name, size)

    async def _save(self, response: httpx.Response, path: Path) -> int:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large()
        size = 0
        with open(path, "wb") as out:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_large()
                out.write(chunk)
        return size

    def _too_large(self) -> TooLarge:
        return TooLarge(
            f"The download is larger than {self.max_bytes} bytes (ASSET_DOWNLOAD_MAX_FILE_SIZE_GB)"
        )

    # --- S3 -------------------------------------------------------------------------------------
    def _s3(self, url: str, dest: Path) -> Fetched:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        bucket, key = parse_s3_url(url)
        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise InvalidParameters(
                "S3 credentials are not configured (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
                "InvalidParameters",
            )
        client = session.client("s3", endpoint_url=self.settings.s3_endpoint_url or None)
        try:
            head = client.head_object(Bucket=bucket, Key=key)
            if int(head.get("ContentLength", 0)) > self.max_bytes:
                raise self._too_large()
            path = dest / "download.part"
            start = time.monotonic()
            with open(path, "wb") as out:
                body = client.get_object(Bucket=bucket, Key=key)["Body"]
                size = 0
                for chunk in body.iter_chunks(10 * CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise self._too_large()
                    if time.monotonic() - start > self.settings.asset_download_total_timeout_s:
                        raise InvalidParameters(f"Download of {url[:200]!r} timed out", "DownloadFailed")
                    out.write(chunk)
        except (ClientError, NoCredentialsError, BotoCoreError) as exc:
            raise InvalidParameters(f"Cannot read s3://{bucket}/{key}: {exc}", "InvalidParameters") from exc
        return Fetched(path, safe_name(key, head.get("ContentType")), size)


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/key, https://bucket.s3[.region].amazonaws.com/key or https://s3[.region].amazonaws.com/
    bucket/key -> (bucket, key); InvalidParameters when either is missing."""
    parts = urlsplit(url)
    path = unquote(parts.path.lstrip("/"))
    if parts.scheme == "s3":
        bucket, key = parts.netloc, path
    else:
        m = _S3_HOST.match(parts.hostname or "")
        if m and m.group("bucket"):
            bucket, key = m.group("bucket"), path
        else:
            bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise InvalidParameters(f"S3 URL {url[:200]!r} needs a bucket and a key", "InvalidParameters")
    return bucket, key
