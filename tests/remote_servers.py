"""Real servers for the remote-ingestion tests: an HTTP(S) file server (with redirects and a slow route) on a
chosen address of this machine, and moto's S3 server. All stop by themselves when the tests end."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.kafka_redis import ChildServer
from tests.servers import free_port


def lan_address() -> str | None:
    """This machine's first non-loopback IPv4 address (its own interface: traffic stays on the host)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return next((a for a in out.split() if "." in a and not a.startswith("127.")), None)


def self_signed_certificate(directory: Path, host: str) -> tuple[str, str]:
    """A throwaway certificate for `host` (an IP address): -> (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


class FileServer:
    """Serves `root` over HTTP on host:port. /redirect?to=URL answers 302 to URL; /slow/NAME sends the
    headers of a 50 MB body and then trickles bytes (for a download interrupted by kill -9)."""

    def __init__(self, root: Path, host: str, tls_dir: Path | None = None) -> None:
        self.root = root
        self.host = host
        self.scheme = "https" if tls_dir is not None else "http"
        self.port = free_port()
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                parts = urlsplit(self.path)
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", parts.query.removeprefix("to="))
                    self.end_headers()
                    return
                if parts.path.startswith("/slow/"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(50 * 2**20))
                    self.end_headers()
                    deadline = time.monotonic() + 20
                    try:
                        while time.monotonic() < deadline:
                            self.wfile.write(b"\0" * 4096)
                            time.sleep(0.05)
                    except OSError:
                        pass
                    return
                super().do_GET()

        self._httpd = http.server.ThreadingHTTPServer((host, self.port), Handler)
        self._httpd.daemon_threads = True
        if tls_dir is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self_signed_certificate(tls_dir, host))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{path.lstrip('/')}"

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# moto takes any credentials; the service reads these from its environment like real AWS ones.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoS3(ChildServer):
    """moto's S3 server (a real HTTP S3 API) on 127.0.0.1."""

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class SlowProxy:
    """A TCP proxy on 127.0.0.1 that forwards client -> server bytes at `rate` bytes/s (server -> client
    at full speed) and counts them: a test can kill a process while its upload is in flight."""

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port = target_port
        self.rate = rate
        self.port = free_port()
        self.forwarded = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        step = max(1, self.rate // 20)
        try:
            while data := src.recv(step if slow else 65536):
                dst.sendall(data)
                if slow:
                    self.forwarded += len(data)
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
