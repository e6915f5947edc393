"""A PostgreSQL server of the tests' own (initdb in a temporary folder, its own port), for
scenarios that stop and start the database without touching the machine's server.

It runs as the ``postgres`` user with trust authentication on 127.0.0.1 only, and is stopped by
its postmaster PID.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def _find_bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def _bin() -> Path:
    found = _find_bin()
    if found is None:
        raise RuntimeError("PostgreSQL's server binaries are not installed")
    return found


def available() -> str | None:
    """``None`` if a private server can be started here, else why not."""
    if _find_bin() is None:
        return "PostgreSQL's server binaries are not installed"
    if os.geteuid() != 0:
        return "starting a private PostgreSQL needs root (it runs as the postgres user)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user"
    return None


@dataclass
class PgNode:
    port: int
    root: Path

    @classmethod
    def create(cls, port: int) -> PgNode:
        root = Path(tempfile.mkdtemp(prefix="vidq-pg-"))
        shutil.chown(root, "postgres", "postgres")
        node = cls(port, root)
        node._as_postgres(
            [str(_bin() / "initdb"), "-D", str(node.data), "-U", "vidq", "--auth=trust", "-E", "UTF8"]
        )
        return node

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://vidq@127.0.0.1:{self.port}/vidq"

    def _as_postgres(self, argv: list[str]) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, cwd="/")

    def start(self) -> None:
        self._as_postgres(
            [
                str(_bin() / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        )
        if not self._has_database():
            self._as_postgres(
                [str(_bin() / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "vidq", "vidq"]
            )

    def _has_database(self) -> bool:
        out = subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "vidq",
                "-d",
                "postgres",
                "-tAc",
                "SELECT 1 FROM pg_database WHERE datname = 'vidq'",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        return out.stdout.strip() == "1"

    @property
    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(pidfile.read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        """Stop the server by its postmaster PID (fast shutdown: clients are disconnected)."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
