"""Where alert incidents go, for tests and benches: a webhook receiver on a real socket, Debian's mosquitto
broker, and an MQTT subscriber (paho). All on 127.0.0.1, free ports, stopped by PID."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.kafka_redis import ChildServer
from tests.servers import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass(frozen=True, slots=True)
class Received:
    at: float  # time.time() when it arrived
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """POSTs to any path are recorded. `fail_first`: that many requests get a 500 first (then 200);
    `status`: every answer's status instead; `delay_s`: each answer takes that long."""

    def __init__(self, fail_first: int = 0, status: int = 200, delay_s: float = 0.0) -> None:
        self.received: list[Received] = []
        self.attempts = 0
        self.fail_first, self.status, self.delay_s = fail_first, status, delay_s
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.attempts += 1
                    failing = receiver.attempts <= receiver.fail_first
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                status = 500 if failing else receiver.status
                if status < 300:
                    with receiver._lock:
                        receiver.received.append(Received(time.time(), dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mosquitto(ChildServer):
    """Debian's mosquitto, anonymous, bound to 127.0.0.1 (a config file: -p alone listens everywhere)."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir / "mosquitto.log")
        self.config = log_dir / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")

    def command(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.config)]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class MqttListener:
    """Subscribes to `topic` (wildcards allowed) and keeps what arrives, with its arrival time."""

    def __init__(self, port: int, topic: str = "#") -> None:
        self.messages: list[tuple[float, str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append((time.time(), m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("the MQTT subscription was not acknowledged")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
