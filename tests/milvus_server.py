"""A real Milvus server for tests: Milvus Lite's gRPC server (`milvus-lite server`, the milvus-lite
package) on a free 127.0.0.1 port, its data in a temp dir, stopped by PID. The same pymilvus client code
talks to it as to a Milvus cluster (MILVUS_URI=http://host:port)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.kafka_redis import ChildServer


class MilvusServer(ChildServer):
    def __init__(self, log_path: Path, data_dir: Path) -> None:
        super().__init__(log_path)
        self.data_dir = data_dir

    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "milvus-lite"
        return [str(exe), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                "--port", str(self.port)]  # fmt: skip

    def start(self) -> None:
        super().start()
        from pymilvus import MilvusClient

        deadline = time.monotonic() + 30
        while True:  # the port opens a moment before the server answers
            try:
                MilvusClient(uri=self.uri).list_collections()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"
