"""Resident memory of `rtvi serve embed` with and without RTVI_WARM_UP (the README's row for it).

For each setting: start the service (bundled model), read its VmRSS once ready, then run three bursts of
8 concurrent embedding requests on 20 s files at 1 s chunks (the largest batches the service makes) and
read VmRSS after each. With the warm-up the model's runtime arena is at its largest from the start, so the
bursts add only what the requests themselves hold.

Run: .venv/bin/python bench/warmup_bench.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import upload  # noqa: E402
from tests.media_factory import make_clip, textured_source  # noqa: E402
from tests.servers import RtviServer  # noqa: E402

REQUESTS, BURSTS = 8, 3


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(tmp: Path, clip: Path, warm_up: bool) -> list[float]:
    """[RSS when ready, after each burst], MiB."""
    srv = RtviServer(tmp / f"assets-{warm_up}", env={"RTVI_WARM_UP": str(warm_up).lower()}).start()
    assert srv.proc is not None
    try:
        time.sleep(5)
        found = [rss_mib(srv.proc.pid)]
        with srv.client() as c:
            model = c.get("/v1/models").json()["data"][0]["id"]
            ids = [upload(c, clip).json()["id"] for _ in range(REQUESTS)]

        def embed(asset_id: str) -> int:
            with srv.client() as c:
                body = {"id": asset_id, "model": model, "chunk_duration": 1}
                return c.post("/v1/generate_video_embeddings", json=body).status_code

        for _ in range(BURSTS):
            with ThreadPoolExecutor(REQUESTS) as pool:
                assert set(pool.map(embed, ids)) == {200}
            found.append(rss_mib(srv.proc.pid))
        return found
    finally:
        srv.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(
            Path(tmp) / "clip.mp4", 20, fps=10, width=320, height=240, frames=textured_source(320, 240)
        )
        for warm_up in (False, True):
            found = measure(Path(tmp), clip, warm_up)
            bursts = ", ".join(f"{v:,.0f}" for v in found[1:])
            setting = str(warm_up).lower()
            print(f"RTVI_WARM_UP={setting}: ready {found[0]:,.0f} MiB; after each burst {bursts} MiB")


if __name__ == "__main__":
    main()
