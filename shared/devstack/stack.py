"""Start, watch and stop the services of one local stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

log = logging.getLogger(__name__)

SERVICES = ("gateway", "transcoder", "thumbnailer", "notifier")


@dataclass
class Process:
    name: str
    argv: list[str]
    proc: asyncio.subprocess.Process
    log_path: Path | None = None
    pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None


@dataclass
class Stack:
    """A set of vidq processes sharing one environment (``VIDQ_*`` variables)."""

    env: dict[str, str]
    cwd: Path
    log_dir: Path | None = None  # None: children's output goes to this terminal, prefixed
    processes: dict[str, Process] = field(default_factory=dict)
    #: Variables for one service only (its own broker user, for one).
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)

    async def spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Process:
        env = {**os.environ, **self.env, **(extra_env or {})}
        out: IO[bytes] | None = None
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            out = log_path.open("ab")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out if out is not None else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        if out is not None:
            out.close()
        process = Process(name, argv, proc, log_path)
        if out is None and proc.stdout is not None:
            process.pump = asyncio.create_task(_prefix(name, proc.stdout))
        self.processes[name] = process
        log.info("started %s (pid %d)", name, proc.pid)
        return process

    async def start_service(
        self, service: str, *, name: str | None = None, extra_env: dict[str, str] | None = None
    ) -> Process:
        env = {**self.service_env.get(service, {}), **(extra_env or {})}
        return await self.spawn(name or service, [sys.executable, "-m", service], env)

    async def start_all(self) -> None:
        for service in SERVICES:
            await self.start_service(service)

    async def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        """Wait until the gateway answers ``/readyz`` with 200 (or a process dies)."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                for process in self.processes.values():
                    if not process.running:
                        raise RuntimeError(f"{process.name} exited with status {process.proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/readyz")).status_code == 200:  # noqa: PLR2004
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"the gateway at {url} was not ready within {timeout:.0f} s")
                await asyncio.sleep(0.2)

    async def dev_key(self, url: str, kept: Path) -> tuple[str, bool]:
        """The development key: the one kept in ``kept``, or a new one; and whether it is new.

        One key across restarts, so the videos and webhooks made with it stay visible. A kept key
        the gateway at ``url`` refuses (another database, a revoked key) is replaced, and the new
        one kept for the next start.
        """
        key = _read_kept(kept)
        if key:
            async with httpx.AsyncClient(timeout=5.0) as client:
                answer = await client.get(f"{url}/v1/account", headers={"authorization": f"Bearer {key}"})
            if answer.status_code == 200:  # noqa: PLR2004
                return key, False
        key = await self.create_key("dev")
        _keep(kept, key)
        return key, True

    async def create_key(self, name: str) -> str:
        """A new API key from ``python -m gateway keys create`` (the documented way)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "keys",
            "create",
            "--name",
            name,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"could not create an API key: {err.decode()}")
        return out.decode().strip()

    async def stop(self, name: str, *, sig: int = signal.SIGTERM, grace: float = 20.0) -> int | None:
        """Stop one process by PID (SIGTERM, then SIGKILL after ``grace``); returns its status."""
        process = self.processes.pop(name, None)
        if process is None:
            return None
        if process.running:
            with contextlib.suppress(ProcessLookupError):
                process.proc.send_signal(sig)
            try:
                await asyncio.wait_for(process.proc.wait(), grace)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s; killing it", name, grace)
                with contextlib.suppress(ProcessLookupError):
                    process.proc.kill()
                await process.proc.wait()
        if process.pump is not None:
            with contextlib.suppress(Exception):
                await process.pump
        return process.proc.returncode

    async def stop_all(self, grace: float = 20.0) -> None:
        await asyncio.gather(*(self.stop(name, grace=grace) for name in list(self.processes)))


async def _prefix(name: str, stream: asyncio.StreamReader) -> None:
    async for line in stream:
        sys.stdout.write(f"{name:>11} | {line.decode(errors='replace')}")
        sys.stdout.flush()


def _read_kept(kept: Path) -> str | None:
    return kept.read_text().strip() if kept.is_file() else None


def _keep(kept: Path, key: str) -> None:
    """Write the key readable by its owner only (it is a credential)."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.touch(mode=0o600)
    kept.chmod(0o600)
    kept.write_text(key + "\n")
