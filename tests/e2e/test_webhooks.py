"""Webhook behaviour end to end: test events, 410 Gone, secret rotation, replay, Retry-After."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.e2e.harness import read_sse, scrape, until
from tests.e2e.stack import Running
from tests.media import make_clip
from tests.realdeps import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

NOTIFIER_METRICS = free_port()
STACK_SERVICE_ENV = {"notifier": {"VIDQ_METRICS_PORT": str(NOTIFIER_METRICS)}}


async def _hook(api: httpx.AsyncClient, running: Running, path: str, events: list[str]) -> dict[str, str]:
    response = await api.post("/v1/webhooks", json={"url": f"{running.receiver_url}{path}", "events": events})
    assert response.status_code == 201, response.text
    hook: dict[str, str] = response.json()
    return hook


async def _set_url(running: Running, webhook_id: str, url: str) -> None:
    """Point a webhook elsewhere in the database itself, past the gateway's checks."""
    conn = await asyncpg.connect(running.env["VIDQ_DATABASE_URL"])
    try:
        await conn.execute("UPDATE webhooks SET url = $2 WHERE id = $1", webhook_id, url)
    finally:
        await conn.close()


async def _log_when(
    api: httpx.AsyncClient, webhook_id: str, ok: Any, timeout: float = 30
) -> list[dict[str, Any]]:
    """The delivery log once ``ok(rows)`` holds (it is written just after the receiver answers)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows: list[dict[str, Any]] = (await api.get(f"/v1/webhooks/{webhook_id}/deliveries")).json()["data"]
        if ok(rows) or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def _ready_video(api: httpx.AsyncClient, tmp_path: Path) -> str:
    clip = make_clip(tmp_path / "clip.mp4", width=320, height=180, duration=1)
    with clip.open("rb") as f:
        video = (await api.post("/v1/videos", files={"file": ("clip.mp4", f)})).json()
    events = await read_sse(api, f"/v1/videos/{video['id']}/events")
    assert events[-1].event == "video.ready"
    return str(video["id"])


async def test_a_test_event_reaches_the_endpoint_and_the_delivery_log(running: Running) -> None:
    async with running.client() as api:
        hook = await _hook(api, running, "/test-target", ["video.ready"])
        sent = await api.post(f"/v1/webhooks/{hook['id']}/test")
        assert sent.status_code == 202
        ids = sent.json()
        await until(lambda: running.receiver.at("/test-target", "webhook.test"))
        request = running.receiver.at("/test-target", "webhook.test")[0]
        Webhook(hook["secret"]).verify(request.body, request.headers)
        assert request.headers["webhook-id"] == ids["event_id"]
        body = request.json()
        assert body["type"] == "webhook.test"
        assert body["timestamp"].endswith("Z")  # written as every event is: compact, UTC as Z
        assert b": " not in request.body
        log = await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "succeeded")
        assert [d["id"] for d in log] == [ids["delivery_id"]]
        assert log[0]["event_type"] == "webhook.test"
        assert log[0]["attempt_log"][0]["status_code"] == 200


async def test_the_notifier_reports_each_events_lag_and_its_delivery_log_writes(
    running: Running, tmp_path: Path
) -> None:
    lag = ("vidq_webhook_event_lag_seconds_count", ())
    lag_sum = ("vidq_webhook_event_lag_seconds_sum", ())
    claims = ("vidq_delivery_log_write_rows_sum", (("write", "claim"),))
    records = ("vidq_delivery_log_write_rows_sum", (("write", "record"),))
    metrics = f"http://127.0.0.1:{NOTIFIER_METRICS}/metrics"
    before = await scrape(metrics)
    # a client of its own: its events are no other test's to replay
    async with running.client(await running.new_key("metrics")) as api:
        hook = await _hook(api, running, "/measured", ["video.ready"])
        await _ready_video(api, tmp_path)
        await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "succeeded")
    after = await scrape(metrics)
    assert after[lag] > before.get(lag, 0)  # video.ready's first delivery, at least
    assert 0 <= after[lag_sum] - before.get(lag_sum, 0) < 60  # seconds from the event to its POST
    assert after[claims] > before.get(claims, 0)
    assert after[records] > before.get(records, 0)


async def test_410_gone_disables_the_endpoint(running: Running) -> None:
    running.receiver.script["/gone"] = [(410, {})]
    async with running.client() as api:
        hook = await _hook(api, running, "/gone", ["*"])
        assert (await api.post(f"/v1/webhooks/{hook['id']}/test")).status_code == 202
        state: dict[str, object] = {}
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            state = (await api.get(f"/v1/webhooks/{hook['id']}")).json()
            if state["enabled"] is False:
                break
            await asyncio.sleep(0.1)
        assert state["enabled"] is False
        assert "410" in str(state["disabled_reason"])
        assert len(running.receiver.at("/gone")) == 1  # never retried
        refused = await api.post(f"/v1/webhooks/{hook['id']}/test")
        assert refused.status_code == 409


async def test_after_rotations_every_secret_signs_during_its_grace_period(running: Running) -> None:
    async with running.client() as api:
        hook = await _hook(api, running, "/rotated", ["video.ready"])
        path = f"/v1/webhooks/{hook['id']}"
        first = (await api.post(f"{path}/rotate-secret")).json()
        second = (await api.post(f"{path}/rotate-secret")).json()
        assert len({hook["secret"], first["secret"], second["secret"]}) == 3

        async def test_event() -> Any:
            sent = len(running.receiver.at("/rotated", "webhook.test"))
            assert (await api.post(f"{path}/test")).status_code == 202
            await until(lambda: len(running.receiver.at("/rotated", "webhook.test")) > sent)
            return running.receiver.at("/rotated", "webhook.test")[sent]

        request = await test_event()
        assert len(request.headers["webhook-signature"].split()) == 3
        for secret in (hook["secret"], first["secret"], second["secret"]):  # each still verifies
            Webhook(secret).verify(request.body, request.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 32).verify(request.body, request.headers)

        # a leaked secret: a rotation with no grace, and only the new secret signs
        cut = (await api.post(f"{path}/rotate-secret", json={"grace_s": 0})).json()
        request = await test_event()
        assert len(request.headers["webhook-signature"].split()) == 1
        Webhook(cut["secret"]).verify(request.body, request.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(second["secret"]).verify(request.body, request.headers)

        # the delivery log lists the test events, which belong to no video
        logged = (await api.get(f"{path}/deliveries")).json()["data"]
        assert [(d["event_type"], d["video_id"]) for d in logged] == [("webhook.test", None)] * 2


async def test_replay_sends_the_endpoints_events_again(running: Running, tmp_path: Path) -> None:
    async with running.client() as api:
        since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        hook = await _hook(api, running, "/replayed", ["video.ready"])
        video_id = await _ready_video(api, tmp_path)
        await until(lambda: running.receiver.at("/replayed", "video.ready"))
        first = running.receiver.at("/replayed", "video.ready")[0]
        assert first.json()["data"]["id"] == video_id

        replay = await api.post(f"/v1/webhooks/{hook['id']}/replay", params={"since": since})
        assert replay.status_code == 202

        # (the client's other events of the last second, if any, are replayed too)
        def resent() -> list[Any]:
            later = running.receiver.at("/replayed", "video.ready")[1:]
            return [r for r in later if r.headers["webhook-id"] == first.headers["webhook-id"]]

        await until(resent)  # the same event, sent again
        again = resent()[0]
        Webhook(hook["secret"]).verify(again.body, again.headers)

        naive = await api.post(f"/v1/webhooks/{hook['id']}/replay", params={"since": "2026-01-01T00:00:00"})
        assert naive.status_code == 422


async def test_retry_after_is_honoured(running: Running) -> None:
    # The schedule here is 1 s, 2 s, 3 s; the receiver asks for 2 s, so the 1 s step is skipped.
    running.receiver.script["/busy"] = [(429, {"retry-after": "2"})]
    async with running.client() as api:
        hook = await _hook(api, running, "/busy", ["video.ready"])
        assert (await api.post(f"/v1/webhooks/{hook['id']}/test")).status_code == 202
        await until(lambda: len(running.receiver.at("/busy")) >= 2, timeout=30)
    indexes = [i for i, r in enumerate(running.receiver.requests) if r.path == "/busy"]
    gap = running.receiver.times[indexes[1]] - running.receiver.times[indexes[0]]
    assert gap >= 1.9


async def test_a_delivery_given_up_is_in_the_log_and_the_dead_letter_queue(running: Running) -> None:
    running.receiver.fail["/down"] = 1000  # never recovers; the schedule here is 1 s, 2 s, 3 s
    async with running.client() as api:
        hook = await _hook(api, running, "/down", ["video.ready"])
        sent = (await api.post(f"/v1/webhooks/{hook['id']}/test")).json()
        log = await _log_when(
            api, hook["id"], lambda rows: rows and rows[0]["status"] == "failed", timeout=40
        )
    [delivery] = log
    assert delivery["id"] == sent["delivery_id"]
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 500, 500]
    assert delivery["next_attempt_at"] is None
    connection = await aio_pika.connect(running.env["VIDQ_AMQP_URL"])
    async with connection, connection.channel() as channel:
        dlq = await channel.get_queue("vidq.notifier.deliveries.dlq", ensure=True)
        dead = None
        for _ in range(50):
            dead = await dlq.get(no_ack=True, fail=False)
            if dead is not None:
                break
            await asyncio.sleep(0.1)
    assert dead is not None
    assert dead.headers["vidq-dead-letter-reason"] == "retries-exhausted"
    assert json.loads(dead.body)["delivery_id"] == sent["delivery_id"]


async def _dead_letter_of(
    running: Running, queue: str, key: str, value: str
) -> aio_pika.abc.AbstractIncomingMessage:
    """The dead letter in ``queue``.dlq whose JSON body has ``key: value``, left in place."""
    connection = await aio_pika.connect(running.env["VIDQ_AMQP_URL"])
    async with connection, connection.channel() as channel:
        dlq = await channel.get_queue(f"{queue}.dlq", ensure=True)
        for _ in range(50):
            taken = []
            while (message := await dlq.get(no_ack=False, fail=False)) is not None:
                taken.append(message)
            for message in taken:
                await message.nack(requeue=True)
            found = [m for m in taken if json.loads(m.body).get(key) == value]
            if found:
                return found[0]
            await asyncio.sleep(0.2)
    raise AssertionError(f"no dead letter with {key}={value} in {queue}.dlq")


async def _ops(running: Running, *args: str) -> str:
    """``python -m shared.ops …`` against the stack's broker, as an operator runs it."""
    env = {**os.environ, "VIDQ_AMQP_URL": running.env["VIDQ_AMQP_URL"]}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.ops", *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out
    return out.decode()


async def test_a_given_up_delivery_replayed_from_its_dead_letter_queue_is_sent_again(
    running: Running,
) -> None:
    running.receiver.fail["/fixed-later"] = 1000
    async with running.client() as api:
        hook = await _hook(api, running, "/fixed-later", ["video.ready"])
        sent = (await api.post(f"/v1/webhooks/{hook['id']}/test")).json()
        await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "failed", timeout=40)
        dead = await _dead_letter_of(running, "vidq.notifier.deliveries", "delivery_id", sent["delivery_id"])
        running.receiver.fail["/fixed-later"] = 0  # the endpoint is fixed; ops replay the dead letter
        message_id = str(dead.message_id)
        out = await _ops(running, "dlq", "replay", "vidq.notifier.deliveries", "--id", message_id)
        assert "replayed 1 message(s)" in out
        log = await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "succeeded")
    [delivery] = log
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 500, 500, 200]
    received = running.receiver.at("/fixed-later")
    assert len({r.headers["webhook-id"] for r in received}) == 1  # the same event, sent again
    assert message_id not in await _ops(running, "dlq", "ls", "vidq.notifier.deliveries")


async def test_an_events_failed_first_attempt_is_retried_on_the_schedule(
    running: Running, tmp_path: Path
) -> None:
    running.receiver.fail["/flaky"] = 1  # the first request answers 500
    async with running.client() as api:
        hook = await _hook(api, running, "/flaky", ["video.ready"])
        video_id = await _ready_video(api, tmp_path)
        log = await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "succeeded")
    [delivery] = log
    assert delivery["event_type"] == "video.ready"
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 200]
    received = running.receiver.at("/flaky", "video.ready")
    assert [r.json()["data"]["id"] for r in received] == [video_id, video_id]
    assert received[0].headers["webhook-id"] == received[1].headers["webhook-id"]


async def test_an_event_for_a_forbidden_address_is_logged_failed_and_parked(
    running: Running, tmp_path: Path
) -> None:
    async with running.client() as api:
        refused = await api.post("/v1/webhooks", json={"url": "http://10.11.12.13/hook", "events": ["*"]})
        assert refused.status_code == 422, refused.text  # an IP literal is refused when registered
        hook = await _hook(api, running, "/moved", ["video.ready"])
        # a URL registered before the operator narrowed the allowlist, or a name that resolves to
        # a private address, is refused by the notifier on every connection
        await _set_url(running, hook["id"], "http://10.11.12.13/hook")
        await _ready_video(api, tmp_path)
        log = await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "failed")
    [delivery] = log
    assert "VIDQ_WEBHOOK_ALLOW_HOSTS" in delivery["last_error"]
    assert len(delivery["attempt_log"]) == 1
    connection = await aio_pika.connect(running.env["VIDQ_AMQP_URL"])
    async with connection, connection.channel() as channel:
        dlq = await channel.get_queue("vidq.notifier.deliveries.dlq", ensure=True)
        parked = []
        for _ in range(50):
            message = await dlq.get(no_ack=True, fail=False)
            if message is not None:
                parked.append(json.loads(message.body)["delivery_id"])
            elif delivery["id"] in parked:
                break
            else:
                await asyncio.sleep(0.1)
    assert delivery["id"] in parked


async def test_a_retry_goes_to_the_endpoints_url_as_it_is_now(running: Running) -> None:
    # "Fix the endpoint, then retry": the retry (scheduled or asked for) reaches the fixed URL.
    running.receiver.fail["/broken"] = 1000
    async with running.client() as api:
        hook = await _hook(api, running, "/broken", ["video.ready"])
        sent = (await api.post(f"/v1/webhooks/{hook['id']}/test")).json()
        await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "failed", timeout=40)
        fixed = await api.patch(f"/v1/webhooks/{hook['id']}", json={"url": f"{running.receiver_url}/fixed"})
        assert fixed.status_code == 200, fixed.text
        retried = await api.post(f"/v1/webhooks/{hook['id']}/deliveries/{sent['delivery_id']}/retry")
        assert retried.status_code == 202, retried.text
        log = await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "succeeded")
    [delivery] = log
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 500, 500, 200]
    [arrived] = running.receiver.at("/fixed")
    assert arrived.headers["webhook-id"] == running.receiver.at("/broken")[0].headers["webhook-id"]
    Webhook(hook["secret"]).verify(arrived.body, arrived.headers)

    running.receiver.fail["/moving"] = 1  # and a scheduled retry, after the URL changed
    async with running.client() as api:
        hook = await _hook(api, running, "/moving", ["video.ready"])
        await api.post(f"/v1/webhooks/{hook['id']}/test")
        await until(lambda: running.receiver.at("/moving"), timeout=10)
        await api.patch(f"/v1/webhooks/{hook['id']}", json={"url": f"{running.receiver_url}/moved"})
        await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "succeeded")
    assert len(running.receiver.at("/moving")) == 1
    assert len(running.receiver.at("/moved")) == 1


async def test_a_failed_manual_retry_leaves_the_scheduled_retry_in_the_log(running: Running) -> None:
    # The receiver asks for 8 s (Retry-After); a manual retry in between fails too.
    running.receiver.script["/later"] = [(429, {"retry-after": "8"}), (500, {})]
    async with running.client() as api:
        hook = await _hook(api, running, "/later", ["video.ready"])
        sent = (await api.post(f"/v1/webhooks/{hook['id']}/test")).json()
        [waiting] = await _log_when(api, hook["id"], lambda rows: rows and rows[0]["next_attempt_at"])
        retried = await api.post(f"/v1/webhooks/{hook['id']}/deliveries/{sent['delivery_id']}/retry")
        assert retried.status_code == 202, retried.text
        [after] = await _log_when(api, hook["id"], lambda rows: rows and len(rows[0]["attempt_log"]) == 2)
        assert [a["status_code"] for a in after["attempt_log"]] == [429, 500]
        assert after["status"] == "pending"
        assert after["next_attempt_at"] == waiting["next_attempt_at"]
        [done] = await _log_when(api, hook["id"], lambda rows: rows and rows[0]["status"] == "succeeded")
    assert [a["status_code"] for a in done["attempt_log"]] == [429, 500, 200]
