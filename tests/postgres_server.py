"""A real PostgreSQL (Debian's postgresql package) for tests: initdb in a temp dir, the server on a free
127.0.0.1 port (no Unix socket), stopped by PID. As root, both run as the `postgres` user through setpriv
(initdb refuses root), which execs in place so the PID is the server's."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.kafka_redis import ChildServer

USER = "rtvi"
PASSWORD = "pg-secret-7f3a"  # only ever on 127.0.0.1; tests check it never reaches a log


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} is missing: make test installs Debian's postgresql")
    return found[-1]


class PostgresServer(ChildServer):
    def __init__(self, log_path: Path) -> None:
        super().__init__(log_path)
        # Not under pytest's tmp_path: that is root's 0700 tree, which the postgres user cannot enter.
        self.data = Path(tempfile.mkdtemp(prefix="rtvi-pg-")) / "data"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.data.parent, pw.pw_uid, pw.pw_gid)
            self._as_postgres = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
        pwfile = self.data.parent / "pw"
        pwfile.write_text(PASSWORD)
        if self._as_postgres:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        initdb = [_bin("initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}"]
        options = ["--auth=scram-sha-256", "-E", "UTF8", "--no-sync"]
        subprocess.run([*self._as_postgres, *initdb, *options], check=True, capture_output=True)
        pwfile.unlink()

    def command(self) -> list[str]:
        return [*self._as_postgres, _bin("postgres"), "-D", str(self.data), "-p", str(self.port),
                "-h", "127.0.0.1", "-k", "", "-c", "fsync=off", "-c", "max_connections=200"]  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        for attempt in range(50):  # the port opens a moment before the server takes sessions
            try:
                with psycopg.connect(self.url(), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                return self.url(name)
            except psycopg.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data.parent, ignore_errors=True)
