"""RFC 2397 `data:` URIs -> files on disk (spec §2.3): MIME picks the extension, padding is tolerated."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from pathlib import Path
from urllib.parse import unquote_to_bytes

from rtvi.errors import InvalidParameters, TooLarge

_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,"
)


def decode_data_uri(uri: str, dest_dir: Path, stem: str, max_bytes: int) -> tuple[Path, str]:
    """Write the payload to dest_dir/<stem><ext>; -> (path, mime type)."""
    m = _DATA_URI.match(uri[:512])
    if m is None:
        raise InvalidParameters("Malformed data: URL", "InvalidDataUrl")
    payload = uri[m.end() :]
    mime = m.group("mime") or "text/plain"
    # Base64 inflates by 4/3: reject before decoding anything that cannot fit.
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise TooLarge(f"data: payload is larger than {max_bytes} bytes")
    try:
        if m.group("b64"):
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        else:
            data = unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise InvalidParameters(f"Invalid base64 in data: URL ({exc})", "InvalidDataUrl") from exc
    if len(data) > max_bytes:
        raise TooLarge(f"data: payload is larger than {max_bytes} bytes")
    ext = mimetypes.guess_extension(mime) or ".bin"
    path = dest_dir / f"{stem}{ext}"
    path.write_bytes(data)
    return path, mime
