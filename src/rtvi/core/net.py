"""Host names to addresses, for the checks that decide where the service may connect (remote downloads,
cameras, alert webhooks), and requests pinned to the address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_literal(host: str) -> IPAddress | None:
    """The address a host is written as (1.2.3.4, ::1), or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve(host: str, port: int | None = None) -> list[IPAddress]:
    """Every address `host` stands for: itself when it is an address (no DNS), else what the resolver
    answers. OSError when the name does not resolve."""
    literal = ip_literal(host)
    if literal is not None:
        return [literal]
    return _addresses(await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM))


def resolve_blocking(host: str, port: int | None = None) -> list[IPAddress]:
    """`resolve` for a thread that is not on the event loop (paho's network thread)."""
    literal = ip_literal(host)
    if literal is not None:
        return [literal]
    return _addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


def _addresses(infos: list[tuple[Any, ...]]) -> list[IPAddress]:
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def pinned(url: str, ip: IPAddress) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(the URL with `ip` in place of its host, the Host header, httpx's extensions): a request that goes
    to the address that was checked, so DNS cannot answer differently a moment later; the Host header
    and the TLS server name stay the original host's."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    host = (parts.hostname or "").lower()
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), {"host": parts.netloc.rsplit("@", 1)[-1]}, extensions
