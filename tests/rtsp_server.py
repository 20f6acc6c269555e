"""A real RTSP camera for tests: Debian's gst-rtsp-server, driven by the SYSTEM python (python3-gi).

Run as a script with /usr/bin/python3 (it needs `gi`, which the venv does not have):

    /usr/bin/python3 tests/rtsp_server.py --port 8554 [--width 320 --height 180 --fps 30] [--file clip.mp4]

It serves rtsp://127.0.0.1:PORT/test: a live test pattern encoded with x264, or, with --file, an H.264 MP4
re-payloaded without re-encoding (paced in real time: cheap enough for benchmarks with many 720p clients).
Every client gets its own pipeline: gst-rtsp-server's *shared* media aborts the whole server
(`gst_rtsp_media_get_rates: assertion failed`) when clients connect and leave at the same moment, as
concurrent stream probes do.

Imported from the venv, it provides `RtspServer`, which starts, kills and restarts the script on the same
port, stopping it by PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
MOUNT = "/test"


def gst_available() -> bool:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0')"
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class RtspServer:
    def __init__(
        self,
        port: int,
        log_dir: Path,
        width: int = 320,
        height: int = 180,
        fps: int = 30,
        file: Path | None = None,
    ) -> None:
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}{MOUNT}"
        self.args = ["--port", str(port), "--width", str(width), "--height", str(height), "--fps", str(fps)]
        if file is not None:
            self.args += ["--file", str(file)]
        self.log_path = log_dir / f"rtsp-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> RtspServer:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, __file__, *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"RTSP server exited with {self.proc.returncode}: {self.log_tail()}")
            if self._answers_options():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"RTSP server not listening after {timeout} s: {self.log_tail()}")

    def _answers_options(self) -> bool:
        """An RTSP reply, not just an open port (which could be another process's, or a self-connect)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.settimeout(2)
                sock.sendall(f"OPTIONS {self.url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
                return sock.recv(64).startswith(b"RTSP/1.0 200")
        except OSError:
            return False

    def kill(self) -> None:
        """Kill it abruptly (SIGKILL by PID): the camera vanishes mid-stream."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> RtspServer:
        self.kill()
        return self.start()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


# --- the server itself (system python) ------------------------------------------------------------
def _launch(width: int, height: int, fps: int, file: str | None) -> str:
    pay = "rtph264pay name=pay0 pt=96 config-interval=1"
    if file:
        return f"( filesrc location={file} ! qtdemux ! h264parse ! {pay} )"
    caps = f"video/x-raw,width={width},height={height},framerate={fps}/1"
    encode = f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps}"
    return f"( videotestsrc is-live=true pattern=ball ! {caps} ! {encode} ! {pay} )"


def main() -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--file")
    a = p.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_launch(a.width, a.height, a.fps, a.file))
    # One pipeline per client (see the module docstring); a small x264 encode per client is cheap.
    factory.set_shared(False)
    server.get_mount_points().add_factory(MOUNT, factory)
    server.attach(None)
    print(f"serving rtsp://127.0.0.1:{a.port}{MOUNT}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    sys.exit(main())
