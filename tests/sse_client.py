"""A thread that reads one SSE response of a generate route, for tests and benchmarks."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import httpx

END = object()  # what SseReader.next() returns after [DONE]


class SseReader:
    """Reads one SSE response in a thread, so a test can kill cameras while events arrive."""

    def __init__(
        self, base_url: str, body: dict[str, Any] | None, path: str = "/v1/generate_video_embeddings"
    ) -> None:
        """POSTs `body` to `path`; with body None, GETs `path` (an event stream such as alert incidents)."""
        self.events: queue.Queue[Any] = queue.Queue()
        self.arrivals: list[tuple[float, Any]] = []  # (receive time, event), for latency measurements
        self.status: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base_url, body, path), daemon=True)
        self._thread.start()

    def _run(self, base_url: str, body: dict[str, Any] | None, path: str) -> None:
        with (
            httpx.Client(base_url=base_url, timeout=60) as c,
            c.stream("GET" if body is None else "POST", path, json=body) as r,
        ):
            self.status = r.status_code
            if r.status_code != 200:
                self.events.put(json.loads(r.read()))
                return
            for line in r.iter_lines():  # pings arrive every second, so stop() is noticed quickly
                if self._stop.is_set():
                    return
                if line.startswith("data:"):
                    data = line[5:].strip()
                    event = END if data == "[DONE]" else json.loads(data)
                    self.arrivals.append((time.time(), event))
                    self.events.put(event)
                    if data == "[DONE]":
                        return

    def next(self, timeout: float = 15) -> Any:
        return self.events.get(timeout=timeout)

    def chunks(self, n: int, timeout: float = 15) -> list[dict[str, Any]]:
        out = [self.next(timeout) for _ in range(n)]
        assert all(isinstance(e, dict) and e.get("chunk_responses") for e in out), out
        return out

    def stop(self) -> None:
        """Disconnect, as a client that goes away."""
        self._stop.set()
        self._thread.join(10)
