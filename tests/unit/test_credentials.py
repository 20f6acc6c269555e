"""URL credentials (core/credentials.py): what a log line, a model source and the API show. The other
behaviours are tested where they show: shown_url in test_messages, split/with_credentials in
test_live_chunks, resolve_credentials through the streams API (tests/e2e/test_streams.py)."""

from __future__ import annotations

import pytest

from rtvi.core.credentials import public_url, redact, redact_secret


def test_redact_hides_every_url_user_info_in_a_text() -> None:
    text = "open rtsp://admin:hunter2@cam.local/s failed; retry http://u@h:8080/x, see /tmp/a@b"
    assert redact(text) == "open rtsp://***@cam.local/s failed; retry http://***@h:8080/x, see /tmp/a@b"


def test_public_url_drops_user_info_and_redacts_what_does_not_parse() -> None:
    assert public_url("rtsp://ad%40min:p%3Ass@cam.local:554/stream?x=1") == "rtsp://cam.local:554/stream?x=1"
    assert public_url("rtsp://admin:pw@/no-host") == "rtsp://***@/no-host"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:hf_tok@huggingface.co/org/m", "https://***@huggingface.co/org/m"),
        ("https://hf_tok@example.com:8443/org/m.git", "https://***@example.com:8443/org/m.git"),
        ("ssh://git:secret@example.com/org/m.git", "ssh://***@example.com/org/m.git"),
        ("ssh://git@example.com/org/m.git", "ssh://git@example.com/org/m.git"),  # a user, no secret
        ("git@example.com:org/m.git", "git@example.com:org/m.git"),
        ("file:///srv/models/m", "file:///srv/models/m"),
    ],
)
def test_redact_secret_keeps_ssh_users(url: str, shown: str) -> None:
    assert redact_secret(url) == shown
