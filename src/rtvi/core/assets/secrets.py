"""Secrets at rest: camera credentials are stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from RTVI_SECRET_KEY (a Fernet key: 32 url-safe base64 bytes), else from
`<storage>/secret.key`, created 0600 on first start. Values written before encryption existed (plain
text) are still read, and are encrypted on their next write.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "fernet:"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, key: str, key_file: Path) -> SecretBox:
        if key:
            return cls(key.encode())
        return cls(_key_file(key_file))

    def seal(self, value: str) -> str:
        if not value:
            return value
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return value  # plain text from before encryption
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise ValueError(
                "a stored secret does not open with this key (RTVI_SECRET_KEY changed?)"
            ) from exc


def _key_file(path: Path) -> bytes:
    """Read the key file, or create it (0600, atomically: two processes starting at once agree)."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(Fernet.generate_key())
    try:
        os.link(tmp, path)  # fails if another process made one first: then theirs is the key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes().strip()
