"""NVIDIA's reference compose file for the embedding service, run unchanged on rtvi's image.

deploy/reference/embed-compose.yml is the reference's legacy sample, verbatim. This test builds the image
from the working tree (podman, base made by `make test-container`), copies the compose file and an .env
made from deploy/reference/embed.env into a temp folder, runs `podman-compose up -d` there, and uses the
service through the published port: ready, running as the compose's uid 1001, its health check passing,
an upload landing in the host's ASSET_STORAGE_DIR, video embeddings for it, the model's exports in the
compose's named volume. `podman-compose down -v` removes everything it made.

What podman 4.3 and podman-compose 1.6 cannot take as the compose writes it goes in a second compose file
(podman-override.yml), written per machine and printed: see `_override`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.media_factory import make_clip
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "reference" / "embed-compose.yml"
ENV_TEMPLATE = REPO / "deploy" / "reference" / "embed.env"
IMAGE = "localhost/rtvi"
BASE = "localhost/debian:bookworm"
SERVICE = "rtvi-server"
# The bundled model exports three networks to ONNX and encodes its class names on a first start.
READY_TIMEOUT_S = 300
# This machine's CPU build of torch 2.13.0 (PyPI's wheel for Linux is the CUDA one, GBs of nvidia-* wheels).
WHEELS = Path("/opt/wheels")
# The host's CA bundle: it trusts the TLS-intercepting proxy in front of PyPI, where there is one.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# What podman sets when a container names any ulimit but not these two (root; containers.conf aside).
PODMAN_IMPLIED_ULIMITS = {"nofile": 1048576, "nproc": 4194304}
LIMIT_NAMES = {
    "Max processes": "nproc",
    "Max open files": "nofile",
    "Max locked memory": "memlock",
    "Max stack size": "stack",
    "Max core file size": "core",
    "Max file size": "fsize",
    "Max data size": "data",
    "Max address space": "as",
    "Max cpu time": "cpu",
    "Max pending signals": "sigpending",
    "Max msgqueue size": "msgqueue",
}


def _run(cmd: list[str], *, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd[:3]} exited {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res  # type: ignore[no-any-return]


def _source_hash() -> str:
    """The build context that matters (what .dockerignore lets in), so an unchanged tree reuses its image."""
    h = hashlib.sha256()
    files = [REPO / "Dockerfile", REPO / ".dockerignore", REPO / "pyproject.toml", REPO / "README.md"]
    files += sorted(p for p in (REPO / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


@pytest.fixture(scope="module")
def image_tag() -> str:
    """localhost/rtvi:src-<hash of the build context>, built unless it already exists."""
    tag = f"src-{_source_hash()}"
    if _run(["podman", "image", "exists", f"{IMAGE}:{tag}"], check=False).returncode == 0:
        print(f"reusing {IMAGE}:{tag}")
        return tag
    assert _run(["podman", "image", "exists", BASE], check=False).returncode == 0, (
        f"no {BASE}: `make test-container` makes it (debootstrap)"
    )
    cmd = ["podman", "build", "--format", "docker", "-t", f"{IMAGE}:{tag}", "--build-arg", f"BASE={BASE}"]
    if list(WHEELS.glob("torch-2.13.0+cpu-*.whl")):
        cmd += ["-v", f"{WHEELS}:{WHEELS}:ro", "--build-arg", f"PIP_FIND_LINKS={WHEELS}"]
    if HOST_CA.is_file():
        cmd += ["-v", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    started = time.monotonic()
    print("+", " ".join(cmd), flush=True)
    build = subprocess.run([*cmd, str(REPO)], text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert build.returncode == 0, build.stdout[-8000:]
    print(f"built {IMAGE}:{tag} in {time.monotonic() - started:.0f} s")
    # Older builds of this test: their tags go, the layers they share with this one stay.
    names = _run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE]).stdout.split()
    stale = [n for n in names if n.startswith(f"{IMAGE}:src-") and n != f"{IMAGE}:{tag}"]
    if stale:
        _run(["podman", "rmi", *stale], check=False)
        _run(["podman", "image", "prune", "-f"], check=False)
    return tag


def _container_limits(tag: str) -> dict[str, int | None]:
    """The hard limits a container gets here when none is asked for: what the runtime can set (None:
    unlimited). A sandbox without CAP_SYS_RESOURCE cannot raise any of them."""
    out = _run(["podman", "run", "--rm", "--entrypoint", "cat", f"{IMAGE}:{tag}", "/proc/self/limits"]).stdout
    limits: dict[str, int | None] = {}
    for line in out.splitlines():
        for label, name in LIMIT_NAMES.items():
            if line.startswith(label):
                hard = line[len(label) :].split()[1]
                limits[name] = None if hard == "unlimited" else int(hard)
    return limits


def _override(compose: dict, tag: str) -> tuple[dict, list[str]]:  # type: ignore[type-arg]
    """The second compose file: only what this machine's podman cannot run as written, and why."""
    service = compose["services"][SERVICE]
    override: dict = {}  # type: ignore[type-arg]
    why: list[str] = []
    if isinstance(service.get("extra_hosts"), dict):
        # podman-compose 1.6 turns the mapping `host.docker.internal: host-gateway` into
        # `--add-host host.docker.internal` (the key alone), which podman rejects; podman 4.3 has no
        # host-gateway either. podman puts host.containers.internal (the host) in /etc/hosts by itself.
        override["extra_hosts"] = "RESET"
        why.append("extra_hosts: podman-compose passes a mapping's key alone; podman 4.3 has no host-gateway")
    asked = {k: _ulimit_pair(v) for k, v in (service.get("ulimits") or {}).items()}
    if asked:
        for name, value in PODMAN_IMPLIED_ULIMITS.items():
            asked.setdefault(name, (value, value))
    allowed = _container_limits(tag) if asked else {}
    clamped = {}
    for name, (soft, hard) in asked.items():
        cap = allowed.get(name)
        if cap is not None and (hard is None or hard > cap):
            clamped[name] = {"soft": cap if soft is None else min(soft, cap), "hard": cap}
    if clamped:
        override["ulimits"] = clamped
        why.append(f"ulimits above what a container can set on this machine, lowered to it: {clamped}")
    return override, why


def _ulimit_pair(value: object) -> tuple[int | None, int | None]:
    def lim(v: object) -> int | None:
        n = int(v)  # type: ignore[call-overload]
        return None if n < 0 else n

    if isinstance(value, dict):
        return lim(value["soft"]), lim(value["hard"])
    return lim(value), lim(value)


def _dump_override(override: dict) -> str:  # type: ignore[type-arg]
    text = yaml.safe_dump({"services": {SERVICE: override}}, sort_keys=False)
    return text.replace("extra_hosts: RESET", "extra_hosts: !reset []")


def _env(template: str, values: dict[str, str]) -> str:
    text = template
    for key, value in values.items():
        text = text.replace(f"<{key}>", value)
    active = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not [line for line in active if re.search(r"=<", line)], active
    return text


class Stack:
    """`podman-compose` in one folder, with an environment that holds nothing of ours: the compose's
    `${NGC_MODEL_CACHE:-...}` and friends read the shell first, the .env second."""

    def __init__(self, folder: Path, files: list[str]) -> None:
        self.folder = folder
        self.project = f"rtviref{os.getpid()}"
        self.files = files
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(folder)}

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "podman_compose", "-p", self.project]
        for f in self.files:
            cmd += ["-f", f]
        return _run([*cmd, *args], check=check, cwd=self.folder, env=self.env)

    @property
    def container(self) -> str:
        return f"{self.project}_{SERVICE}_1"

    def logs(self) -> str:
        res = _run(["podman", "logs", "--tail", "200", self.container], check=False)
        return res.stdout + res.stderr


@pytest.fixture
def stack(image_tag: str, tmp_path: Path) -> Iterator[tuple[Stack, dict[str, str]]]:
    folder = tmp_path / "compose"
    folder.mkdir()
    shutil.copyfile(COMPOSE, folder / COMPOSE.name)
    assert (folder / COMPOSE.name).read_bytes() == COMPOSE.read_bytes()
    assets, logs = tmp_path / "assets", tmp_path / "logs"
    for d in (assets, logs):
        d.mkdir()
        d.chmod(0o777)  # the container runs as uid 1001
    values = {"port": str(free_port()), "tag": image_tag, "assets": str(assets), "logs": str(logs)}
    (folder / ".env").write_text(_env(ENV_TEMPLATE.read_text(), values))

    compose = yaml.safe_load(COMPOSE.read_text())
    override, why = _override(compose, image_tag)
    files = [COMPOSE.name]
    if override:
        text = _dump_override(override)
        (folder / "podman-override.yml").write_text(text)
        files.append("podman-override.yml")
        print("podman-override.yml (" + "; ".join(why) + "):\n" + text)
    st = Stack(folder, files)
    try:
        st.compose("up", "-d")
        yield st, values
    except BaseException:
        print(st.logs())
        raise
    finally:
        st.compose("down", "-v", check=False)


def _wait_ready(st: Stack, url: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        try:
            if httpx.get(url + "/v1/ready", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        state = _run(["podman", "inspect", "--format", "{{.State.Running}}", st.container], check=False)
        assert state.stdout.strip() == "true", f"the container stopped:\n{st.logs()}"
        time.sleep(2)
    raise AssertionError(f"/v1/ready not 200 after {READY_TIMEOUT_S} s:\n{st.logs()}")


@pytest.mark.timeout(3600)
def test_reference_compose_runs_our_image(stack: tuple[Stack, dict[str, str]], tmp_path: Path) -> None:
    st, values = stack
    url = f"http://127.0.0.1:{values['port']}"
    try:
        took = _wait_ready(st, url)
        print(f"ready {took:.0f} s after `up -d`")

        # The compose's `user: "1001:1001"`, and its health check (curl in the image) passes.
        assert _run(["podman", "exec", st.container, "id", "-u"]).stdout.strip() == "1001"
        assert _run(["podman", "inspect", "--format", "{{.Config.User}}", st.container]).stdout.strip() == (
            "1001:1001"
        )
        health = json.loads(
            _run(["podman", "inspect", "--format", "{{json .Config.Healthcheck}}", st.container]).stdout
        )
        assert "curl" in " ".join(health["Test"]), health
        _run(["podman", "healthcheck", "run", st.container])

        clip = make_clip(tmp_path / "cars.mp4", seconds=12, fps=10, width=160, height=120)
        with httpx.Client(base_url=url, timeout=120) as c:
            with clip.open("rb") as f:
                r = c.post(
                    "/v1/files",
                    data={"purpose": "vision", "media_type": "video"},
                    files={"file": (clip.name, f, "application/octet-stream")},
                )
            assert r.status_code == 200, r.text
            fid = r.json()["id"]
            model = c.get("/v1/models").json()["data"][0]["id"]
            r = c.post("/v1/generate_video_embeddings", json={"id": fid, "model": model, "chunk_duration": 5})
            assert r.status_code == 200, r.text
            chunks = r.json()["chunk_responses"]
            assert len(chunks) == 3 and all(len(ch["embeddings"]) > 0 for ch in chunks), chunks

        # The upload is in the host folder the compose mounts at /tmp/assets, written by uid 1001.
        stored = [p for p in Path(values["assets"]).rglob(clip.name) if fid in p.parts]
        assert len(stored) == 1 and stored[0].read_bytes() == clip.read_bytes(), stored
        assert stored[0].stat().st_uid == 1001

        # The model's ONNX exports went to the compose's named volume for NGC_MODEL_CACHE.
        volume = f"{st.project}_rtvi-ngc-model-cache"
        mountpoint = Path(
            _run(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", volume]).stdout.strip()
        )
        assert list(mountpoint.rglob("*.onnx")), sorted(mountpoint.rglob("*"))
    except BaseException:
        print(st.logs())
        raise
