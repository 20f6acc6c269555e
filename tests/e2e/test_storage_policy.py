"""The storage policy over HTTP (spec §2.4, §2.5): a cap of about two uploads, three uploads -> the
oldest is gone with the age-out message, the newest stay, and /v1/assets/stats tells the truth."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import upload
from tests.servers import RtviServer


def test_a_full_store_evicts_the_oldest_upload(tmp_path: Path, media: dict[str, Path]) -> None:
    clip = media["clip35"]
    size = clip.stat().st_size
    cap_gb = size * 2.5 / 2**30
    # The reference's policy, assets alone: the search index (which the cap counts too, see
    # tests/unit/test_index_retention.py) would take more than these tiny clips.
    env = {"MAX_ASSET_STORAGE_SIZE_GB": repr(cap_gb), "RTVI_SEARCH_INDEX": "false"}
    srv = RtviServer(tmp_path / "assets", env=env).start()
    try:
        with srv.client() as c:
            ids = [upload(c, clip).json()["id"] for _ in range(3)]
            gone = c.get(f"/v1/files/{ids[0]}")
            assert gone.status_code == 400 and gone.json() == {
                "code": "BadParameter",
                "message": f"{ids[0]} already deleted because of age out policy",
            }
            assert [c.get(f"/v1/files/{i}").status_code for i in ids[1:]] == [200, 200]
            assert c.delete(f"/v1/files/{ids[0]}").json()["message"] == f"File {ids[0]} already deleted"
            stats = c.get("/v1/assets/stats").json()
            assert stats["aged_out_count"] == 1 and stats["asset_count_with_storage"] == 2
            assert stats["storage_usage_bytes"] == 2 * size
            assert stats["max_storage_usage_gb"] == pytest.approx(cap_gb)
            on_disk = sorted(p.name for p in (srv.storage / "files").iterdir())
            assert on_disk == sorted(ids[1:])
        # The policy's memory survives a restart.
        srv.stop()
        srv.start()
        assert httpx.get(f"{srv.url}/v1/files/{ids[0]}").json()["message"].endswith("age out policy")
    finally:
        srv.stop()
