"""A RabbitMQ node of the tests' own, on separate ports, for scenarios that reconfigure or
restart the broker without disturbing anything else on the machine.

It runs the Debian package's server script as the ``rabbitmq`` user with its own node name,
ports, data and log folders, config file and an empty plugin list, and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def available() -> str | None:
    """``None`` if a private node can be started here, else why not."""
    if not SERVER.exists():
        return "the rabbitmq-server package is not installed"
    if os.geteuid() != 0:
        return "starting a private RabbitMQ node needs root (it runs as the rabbitmq user)"
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return "no rabbitmq user"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class BrokerNode:
    """``root`` must be reachable by the rabbitmq user: use :meth:`in_temp_dir`."""

    root: Path
    amqp_port: int
    name: str
    config: str = ""
    dist_port: int = 0
    management_port: int = 0  # 0: no management plugin
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_temp_dir(cls, amqp_port: int, name: str, config: str = "", management_port: int = 0) -> BrokerNode:
        # pytest's tmp_path lives under a root-only folder the rabbitmq user cannot enter
        root = Path(tempfile.mkdtemp(prefix="vidq-rabbit-"))
        return cls(root, amqp_port, name, config, management_port=management_port)

    @property
    def admin_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def pid(self) -> int:
        return int((self.root / "pid").read_text().strip())

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("mnesia", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        plugins = "[rabbitmq_management]" if self.management_port else "[]"
        (self.root / "enabled_plugins").write_text(f"{plugins}.\n")
        management = (
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            if self.management_port
            else ""
        )
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}\n{management}{self.config}\n"
        )
        shutil.chown(self.root, "rabbitmq", "rabbitmq")
        for path in self.root.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        env = {
            **os.environ,
            "HOME": "/var/lib/rabbitmq",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port or _free_port()),
            "ERL_CRASH_DUMP": str(self.root / "erl_crash.dump"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.root / "pid"),
        }
        with (self.root / "server.out").open("ab") as out:
            self.process = subprocess.Popen(
                ["runuser", "-u", "rabbitmq", "--", str(SERVER)],
                cwd="/var/lib/rabbitmq",
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not (
            _port_open(self.amqp_port) and (not self.management_port or _port_open(self.management_port))
        ):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"broker node {self.name} did not start: {(self.root / 'server.out').read_text()[-2000:]}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0, *, sig: int = signal.SIGTERM) -> None:
        """Stop the node by its PID (``sig``, then SIGKILL); SIGKILL here is a crash."""
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = self.pid
            os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
