"""Text embeddings per second over HTTP: rtvi against infinity-emb serving the same MiniLM, same machine,
same run, at batch 1 and batch 64; sentence-transformers called in-process is the floor (no HTTP), and
rtvi's own text encoder in-process (ONNX Runtime) shows what the HTTP path costs.

infinity-emb pins numpy<2, sentence-transformers<4, typer<0.13 and more, so it cannot share rtvi's
environment: it runs from its own virtual environment (created on first use under bench/out/, from PyPI:
torch==2.13.0 first, then infinity-emb[server,torch]). Each server is measured alone, the other idle.
Median of REPEATS rounds; rounds alternate the servers so drift in machine speed hits both.

Run: .venv/bin/python bench/text_bench.py   (prints a markdown table)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import RtviServer, free_port  # noqa: E402

from rtvi.core.models.bundled import minilm_dir  # noqa: E402

INFINITY_VENV = ROOT / "bench" / "out" / "infinity-venv"
INFINITY_VERSION = "0.0.78"
REPEATS = 3
SINGLES = 200  # batch-1 requests per round
BATCHES = 20  # batch-64 requests per round
BATCH = 64
IN_PROCESS = "rtvi text encoder in-process (ONNX Runtime)"


def texts(n: int, salt: int) -> list[str]:
    return [f"a forklift carrying pallet {salt}-{i} past the loading dock" for i in range(n)]


def ensure_infinity() -> Path:
    exe = INFINITY_VENV / "bin" / "infinity_emb"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(INFINITY_VENV)], check=True)
        pip = [str(INFINITY_VENV / "bin" / "pip"), "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, f"infinity-emb[server,torch]=={INFINITY_VERSION}"], check=True)
    return exe


class InfinityServer:
    def __init__(self, exe: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.exe = exe
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> InfinityServer:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        cmd = [str(self.exe), "v2", "--model-id", str(minilm_dir()), "--served-model-name", "minilm"]
        cmd += ["--engine", "torch", "--device", "cpu", "--batch-size", str(BATCH), "--port", str(self.port)]
        cmd += ["--host", "127.0.0.1", "--no-bettertransformer"]
        self.log = tempfile.NamedTemporaryFile(prefix="infinity-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"infinity-emb exited: see {self.log.name}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("infinity-emb did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def rate(post: Callable[[list[str]], None], batch: int, requests: int, salt: int) -> float:
    """Texts per second for `requests` sequential requests of `batch` texts (new texts each time)."""
    post(texts(batch, -1))  # warm-up
    start = time.perf_counter()
    for r in range(requests):
        post(texts(batch, salt * 10_000 + r))
    return batch * requests / (time.perf_counter() - start)


def main() -> None:
    infinity = InfinityServer(ensure_infinity()).start()
    results: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rtvi = RtviServer(Path(tmp) / "assets").start()
            try:
                with (
                    rtvi.client() as rc,
                    httpx.Client(base_url=infinity.url, timeout=120) as ic,
                ):
                    model = rc.get("/v1/models").json()["data"][0]["id"]

                    def ours(batch: list[str]) -> None:
                        body = {"text_input": batch, "model": model}
                        r = rc.post("/v1/generate_text_embeddings", json=body)
                        assert r.status_code == 200 and len(r.json()["data"]) == len(batch), r.text

                    def theirs(batch: list[str]) -> None:
                        r = ic.post("/embeddings", json={"input": batch, "model": "minilm"})
                        assert r.status_code == 200 and len(r.json()["data"]) == len(batch), r.text

                    for round_ in range(REPEATS):
                        for name, post in (("rtvi", ours), ("infinity-emb", theirs)):
                            for batch, n in ((1, SINGLES), (BATCH, BATCHES)):
                                key = f"{name} batch {batch}"
                                results.setdefault(key, []).append(rate(post, batch, n, round_))
            finally:
                rtvi.stop()
    finally:
        infinity.stop()
    results |= floor()
    print(f"| measurement (texts/s, median of {REPEATS}) | batch 1 | batch {BATCH} |\n|---|---|---|")
    for name in ("rtvi", "infinity-emb", "sentence-transformers in-process", IN_PROCESS):
        cells = [statistics.median(results[f"{name} batch {b}"]) for b in (1, BATCH)]
        print(f"| {name} | {cells[0]:.0f} | {cells[1]:.0f} |")
    for b in (1, BATCH):
        ours, theirs = (statistics.median(results[f"{name} batch {b}"]) for name in ("rtvi", "infinity-emb"))
        ratio = ours / theirs
        print(f"| rtvi / infinity-emb, batch {b} | {ratio:.2f}x | |")
    print("rounds:", {k: [round(v) for v in vs] for k, vs in results.items()})


def floor() -> dict[str, list[float]]:
    """The same model without HTTP: sentence-transformers' encode() in torch (what either server could
    reach) and rtvi's text encoder in ONNX Runtime, rounds alternating."""
    import torch
    from sentence_transformers import SentenceTransformer

    from rtvi.core.models.text_encoder import SentenceEncoder

    model = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    ours = SentenceEncoder(minilm_dir(), torch.device("cpu"), name="minilm", batch_size=BATCH, cache_dir=None)
    assert ours.in_onnx_runtime, "the text encoder fell back to torch"

    def encode(batch: list[str]) -> None:
        model.encode(batch, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)

    out: dict[str, list[float]] = {}
    for round_ in range(REPEATS):
        for name, fn in (("sentence-transformers in-process", encode), (IN_PROCESS, ours.encode)):
            for batch, n in ((1, SINGLES), (BATCH, BATCHES)):
                out.setdefault(f"{name} batch {batch}", []).append(rate(fn, batch, n, round_))
    return out


if __name__ == "__main__":
    main()
