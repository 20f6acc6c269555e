"""Where a rule may send its incidents: webhook and MQTT hosts are chosen by whoever writes rules, so they
are checked as downloads are (core/assets/remote.py): public addresses only, unless the operator lists
the host in RTVI_ALERT_ALLOWED_HOSTS (names, addresses, CIDR networks). Checked when a rule is saved,
again before each webhook delivery and each connection of a rule's MQTT link (paho reconnects by itself),
and the connection then goes to the checked address (DNS cannot answer differently between the check and
the connection)."""

from __future__ import annotations

from urllib.parse import urlsplit

from rtvi.core.assets.remote import BLOCKED_NAME_PARTS, check_address
from rtvi.core.net import IPAddress, resolve, resolve_blocking
from rtvi.settings import HostAllowlist


class Refused(Exception):
    """Incidents may not go there; the message says why (no credentials in it)."""


async def checked_address(url: str, allowed: HostAllowlist | None) -> IPAddress:
    """The address incidents to `url` go to, once checked; Refused otherwise. Connect to this address
    (net.pinned), not to the name again: a name may resolve elsewhere a moment later."""
    host = _host(url)
    try:
        addresses = await resolve(host)
    except OSError as exc:
        raise Refused(f"host {host!r} does not resolve: {exc}") from None
    return _admitted(host, addresses, allowed)


def checked_address_blocking(url: str, allowed: HostAllowlist | None) -> IPAddress:
    """`checked_address` off the event loop: for each connection of an MQTT link (paho's thread)."""
    host = _host(url)
    try:
        addresses = resolve_blocking(host)
    except OSError as exc:
        raise Refused(f"host {host!r} does not resolve: {exc}") from None
    return _admitted(host, addresses, allowed)


def _host(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    if not host:
        raise Refused("the URL names no host")
    return host


def _admitted(host: str, addresses: list[IPAddress], allowed: HostAllowlist | None) -> IPAddress:
    """The address to connect to, when `host`'s addresses may be reached; Refused otherwise."""
    if not addresses:
        raise Refused(f"host {host!r} does not resolve")
    if allowed is not None and (
        host in allowed.names
        or (allowed.networks and all(any(a in n for n in allowed.networks) for a in addresses))
    ):
        return addresses[0]
    hint = f"RTVI_ALERT_ALLOWED_HOSTS may list {host!r}"
    if any(part in host for part in BLOCKED_NAME_PARTS):
        raise Refused(f"host {host!r} is refused ({hint})")
    for ip in addresses:  # every address: a mixed answer cannot smuggle in a private one
        why = check_address(ip, host, frozenset())
        if why:
            raise Refused(f"{why.split(' (')[0]} ({hint})")
    return addresses[0]


async def refusal(url: str, allowed: HostAllowlist | None) -> str | None:
    """Why incidents may not go to `url`, or None when they may."""
    try:
        await checked_address(url, allowed)
    except Refused as exc:
        return str(exc)
    return None
