"""tests/deploy builds an image and runs it with podman (root, minutes): `make test-container` only.

A plain `pytest` (as `make test` runs it) never collects this folder; it is collected only when the
command line names it or a file in it (`pytest tests/deploy`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _named(config: pytest.Config) -> bool:
    base = config.invocation_params.dir
    for arg in config.invocation_params.args:
        if arg.startswith("-"):
            continue
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.parent == HERE and not _named(config):
        return True
    return None
