"""Dead-letter tooling on a real broker: list with reasons, replay one or all, purge."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractRobustConnection
from pydantic import BaseModel

from shared.errors import PermanentError
from shared.messaging.codec import outgoing
from shared.messaging.consumer import Route, replayed
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import THUMBNAILER_UPLOADS, UPLOADS, build
from shared.ops import depth, list_dead_letters, replay
from shared.runtime import Consumers, connect
from shared.settings import AdminSettings
from tests.realdeps import amqp_url_for, unique
from tests.settings import ROOT


class Job(BaseModel):
    n: int


class Worker:
    def __init__(self) -> None:
        self.broken = True
        self.done: list[int] = []
        self.replayed: list[bool] = []

    async def handle(self, job: Job, _: object) -> None:
        self.replayed.append(replayed())
        if self.broken:
            raise PermanentError(f"job {job.n} cannot be done yet")
        self.done.append(job.n)


@pytest.fixture
async def connection(broker: AdminSettings) -> AsyncIterator[AbstractRobustConnection]:
    conn = await connect(str(broker.amqp_url), "ops-test")
    yield conn
    await conn.close()


async def _until(predicate: object, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_dead_letters_are_listed_with_their_reason_and_replayed_back_to_their_queue(
    broker: AdminSettings, connection: AbstractRobustConnection
) -> None:
    worker = Worker()

    async def handle(job: Job, deps: object) -> None:
        await worker.handle(job, deps)

    topology = build(broker)
    publisher = await AmqpPublisher.open(connection)
    consumers = Consumers(
        service="ops-test",
        connection=connection,
        topology=topology,
        routes=[Route(topology.queue(THUMBNAILER_UPLOADS), Job, handle)],
        deps=None,
        publisher=publisher,
    )
    await consumers.start()
    for n in (1, 2, 3):
        await publisher.publish(
            UPLOADS, "", outgoing(Job(n=n), message_id=f"job-{n}", type="job", correlation_id=None)
        )
    channel = await connection.channel()
    for _ in range(100):
        if await depth(channel, THUMBNAILER_UPLOADS) == 3:
            break
        await asyncio.sleep(0.1)
    letters = await list_dead_letters(channel, THUMBNAILER_UPLOADS)
    assert [d.message_id for d in letters] == ["job-1", "job-2", "job-3"]
    assert {d.reason for d in letters} == {"permanent"}
    assert "cannot be done yet" in letters[0].error
    assert len(await list_dead_letters(channel, f"{THUMBNAILER_UPLOADS}.dlq")) == 3  # listing takes nothing

    worker.broken = False
    assert await replay(channel, publisher, THUMBNAILER_UPLOADS, "job-2") == 1
    await _until(lambda: worker.done == [2])
    assert [d.message_id for d in await list_dead_letters(channel, THUMBNAILER_UPLOADS)] == ["job-1", "job-3"]

    assert await replay(channel, publisher, THUMBNAILER_UPLOADS, None) == 2
    await _until(lambda: sorted(worker.done) == [1, 2, 3])
    assert await list_dead_letters(channel, THUMBNAILER_UPLOADS) == []
    # the three first tries were fresh; each replay told the handler so
    assert worker.replayed == [False, False, False, True, True, True]
    await consumers.stop(1)


async def test_the_cli_lists_and_purges(broker: AdminSettings, connection: AbstractRobustConnection) -> None:
    publisher = await AmqpPublisher.open(connection)
    dead = outgoing(Job(n=9), message_id="job-9", type="job", correlation_id=None).with_headers(
        **{"vidq-dead-letter-reason": "malformed", "vidq-error": "bad", "vidq-attempts": 1}
    )
    await publisher.publish("vidq.dlx", THUMBNAILER_UPLOADS, dead)
    env = {**os.environ, "VIDQ_AMQP_URL": str(broker.amqp_url)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared.ops", "dlq", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    overview = cli("ls")
    assert overview.returncode == 0, overview.stderr
    assert f"       1  {THUMBNAILER_UPLOADS}.dlq" in overview.stdout
    listed = cli("ls", THUMBNAILER_UPLOADS)
    assert "job-9\tjob\tmalformed\tattempts=1" in listed.stdout
    assert cli("purge", THUMBNAILER_UPLOADS).returncode == 2  # needs --yes
    purged = cli("purge", THUMBNAILER_UPLOADS, "--yes")
    assert "purged 1 message(s)" in purged.stdout
    assert "0 dead letter(s)" in cli("ls", THUMBNAILER_UPLOADS).stdout
    unknown = cli("replay", THUMBNAILER_UPLOADS, "--id", "nope")
    assert unknown.returncode == 3
    assert unknown.stderr.startswith(f"no dead letter 'nope' in {THUMBNAILER_UPLOADS}.dlq; ")
    assert unknown.stdout == ""

    # a queue that is not there, a broker that cannot be reached: one line each, no traceback
    for args in (("ls", "vidq.nonexistent"), ("replay", "vidq.nonexistent", "--all")):
        missing = cli(*args)
        assert missing.returncode == 3
        assert missing.stderr == (
            "no queue vidq.nonexistent.dlq on this broker's vhost; "
            "`python -m shared.ops dlq ls` lists the dead-letter queues\n"
        )
    env["VIDQ_AMQP_URL"] = "amqp://guest:secret-word@127.0.0.1:1/vidq"
    away = cli("ls")
    assert away.returncode == 69
    assert away.stderr.startswith("cannot reach the broker at 127.0.0.1:1 (vhost /vidq): ")
    assert "Traceback" not in away.stderr
    assert "secret-word" not in away.stderr
    # a user the broker refuses, a vhost it closes the door on: one line each, exit 77
    env["VIDQ_AMQP_URL"] = "amqp://nobody:secret-word@127.0.0.1:5672/vidq"
    refused = cli("ls")
    assert (refused.returncode, refused.stderr.count("\n")) == (77, 1), refused.stderr
    assert refused.stderr.startswith("the broker refused user 'nobody'")
    env["VIDQ_AMQP_URL"] = amqp_url_for(unique("vidq-no-such-vhost-"))
    closed = cli("ls")
    assert (closed.returncode, closed.stderr.count("\n")) == (77, 1), closed.stderr
    assert "does not exist or user" in closed.stderr
    assert "Traceback" not in refused.stderr + closed.stderr
    # vidq dlq says the same, as the CLI's "no or wrong credentials" (exit 4)
    argv = [sys.executable, "-m", "vidq", "dlq", "ls"]
    through_cli = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert through_cli.returncode == 4, through_cli.stderr
    assert through_cli.stderr.startswith("vidq: refused: the broker closed the connection as it opened")
    assert through_cli.stderr.count("\n") == 1
