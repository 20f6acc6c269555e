"""Credentials in URLs, in one place: showing a URL (or any text holding URLs) without them, and taking a
camera's user name and password out of its RTSP URL and putting them back.

- `redact(text)`: every URL's user-info in a text (a URL, an error message, a log line) replaced by ***.
- `public_url(url)`: the URL without its user-info, as the API lists a stream.
- `shown_url(url)`: a source URL as a message carries it: no user-info, no value of a credential-like
  query parameter (presigned URLs), nothing for a data: URI.
- `redact_secret(url)`: a git URL (MODEL_PATH=git:) with a secret in its user-info redacted, an SSH user
  name (ssh://git@host) kept.
- `split_credentials` / `with_credentials` / `resolve_credentials`: a camera's credentials, which the
  registry keeps apart from its URL (meta username / password) and the decoder puts back when it opens it.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from rtvi.errors import InvalidParameters, MalformedRequest

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
# Query parameters that carry credentials in signed or token URLs (S3 presigned URLs, CDN tokens, API
# keys): their values never reach a message. Over-matching only hides a harmless value.
_SECRET_PARAM = re.compile(r"(?i)token|key|secret|passw|pwd|sig|credential|auth|session")


def redact(text: str) -> str:
    """Any URL credentials in `text` (a URL, an error message, a log line) replaced by ***."""
    return _USERINFO.sub(r"\1***@", text)


def public_url(url: str) -> str:
    """The URL as it may be shown: without its credentials (or redacted when it does not parse)."""
    try:
        return split_credentials(url)[0]
    except ValueError:
        return redact(url)


def shown_url(url: str) -> str:
    """A source URL as a message may carry it: no user-info (camera credentials), no value of a
    credential-like query parameter; "" for a data: URI (it is the content, not a location)."""
    if not url or url[:5].lower() == "data:":
        return ""
    parts = urlsplit(public_url(url))
    if not parts.query:
        return urlunsplit(parts)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(query=query))


def redact_secret(url: str) -> str:
    """The URL with its user-info replaced by *** when it may hold a secret: a password, or any user name
    on http(s) (where a token is often given as the user name). A bare user name elsewhere
    (ssh://git@host/org/repo) names an account, not a secret, and is kept."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and parts.scheme in ("https", "http")):
        return url
    return urlunsplit(parts._replace(netloc=f"***@{_host(parts)}"))


def split_credentials(url: str) -> tuple[str, str, str]:
    """rtsp://user:pw@host/path -> ("rtsp://host/path", "user", "pw") (percent-decoded). ValueError for
    a URL that cannot be parsed."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not a URL with a host: {redact(url)[:200]!r}")
    if "@" not in parts.netloc:
        return url, "", ""
    user, _, password = parts.netloc.rsplit("@", 1)[0].partition(":")
    return urlunsplit(parts._replace(netloc=_host(parts))), unquote(user), unquote(password)


def with_credentials(url: str, username: str, password: str) -> str:
    """The inverse of `split_credentials`: the URL with the (percent-encoded) user name and password."""
    if not username and not password:
        return url
    parts = urlsplit(url)
    userinfo = f"{quote(username, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def resolve_credentials(url: str, username: str, password: str) -> tuple[str, str, str]:
    """A camera's credentials, given in its URL or beside it -> (URL without credentials, username,
    password); InvalidParameters for a URL that cannot be parsed, MalformedRequest for an ambiguous or
    half pair."""
    try:
        clean, url_user, url_password = split_credentials(url)
    except ValueError as exc:
        raise InvalidParameters(f"Invalid RTSP URL {redact(url)[:200]!r}: {exc}") from exc
    if (url_user or url_password) and (username or password):
        raise MalformedRequest("Credentials were given both in the URL and in username/password")
    if url_user or url_password:
        username, password = url_user, url_password
    if bool(username) != bool(password):
        raise MalformedRequest("Provide both username and password, or neither")
    return clean, username, password


def _host(parts: SplitResult) -> str:
    """The URL's network location after its user-info (host and port, as written)."""
    return parts.netloc.rsplit("@", 1)[-1]
