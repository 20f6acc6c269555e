"""Where a rule may send its incidents: webhook and MQTT hosts are chosen by whoever writes rules, so they
are checked as downloads are (core/assets/remote.py): public addresses only, unless the operator lists
the host in RTVI_ALERT_ALLOWED_HOSTS (names, addresses, CIDR networks). Checked when a rule is saved and
again before each delivery (a name may resolve elsewhere later)."""

from __future__ import annotations

from urllib.parse import urlsplit

from rtvi.core.assets.remote import BLOCKED_NAME_PARTS, check_address
from rtvi.core.net import resolve
from rtvi.settings import HostAllowlist


async def refusal(url: str, allowed: HostAllowlist | None) -> str | None:
    """Why incidents may not go to `url`, or None when they may."""
    host = (urlsplit(url).hostname or "").lower()
    if not host:
        return "the URL names no host"
    if allowed is not None and host in allowed.names:
        return None
    try:
        addresses = await resolve(host)
    except OSError as exc:
        return f"host {host!r} does not resolve: {exc}"
    if (
        allowed is not None
        and allowed.networks
        and all(any(a in n for n in allowed.networks) for a in addresses)
    ):
        return None
    hint = f"RTVI_ALERT_ALLOWED_HOSTS may list {host!r}"
    if any(part in host for part in BLOCKED_NAME_PARTS):
        return f"host {host!r} is refused ({hint})"
    for ip in addresses:  # every address: a mixed answer cannot smuggle in a private one
        why = check_address(ip, host, frozenset())
        if why:
            return f"{why.split(' (')[0]} ({hint})"
    return None
