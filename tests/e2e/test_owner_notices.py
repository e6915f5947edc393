"""The client's own addresses: they hear about every video and about a disabled endpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.harness import read_sse, until
from tests.e2e.stack import Running
from tests.media import make_clip

pytestmark = pytest.mark.asyncio(loop_scope="module")

# "Failing for days" compressed to three seconds (the retry schedule here is 1 s, 2 s, 3 s).
STACK_ENV = {"VIDQ_WEBHOOK_DISABLE_AFTER_S": "3"}


def _mail_to(running: Running, address: str) -> list[str]:
    return [str(m["subject"]) for m in running.mailbox.messages if address in str(m["to"])]


async def test_ready_mail_goes_to_the_video_address_and_the_clients_addresses(
    running: Running, tmp_path: Path
) -> None:
    async with running.client() as api:
        account = await api.patch(
            "/v1/account", json={"notify_emails": ["ops@example.com", "ops@example.com", "boss@example.com"]}
        )
        assert account.status_code == 200
        assert account.json()["notify_emails"] == ["ops@example.com", "boss@example.com"]
        assert (await api.patch("/v1/account", json={"notify_emails": ["not an address"]})).status_code == 422
        clip = make_clip(tmp_path / "c.mp4", width=320, height=180, duration=1)
        with clip.open("rb") as f:
            video = (
                await api.post(
                    "/v1/videos", files={"file": ("c.mp4", f)}, data={"notify_email": "me@example.com"}
                )
            ).json()
        assert (await read_sse(api, f"/v1/videos/{video['id']}/events"))[-1].event == "video.ready"
    for address in ("me@example.com", "ops@example.com", "boss@example.com"):
        await until(lambda address=address: _mail_to(running, address))
        assert _mail_to(running, address) == ["Your video c.mp4 is ready"]


async def test_an_endpoint_failing_for_too_long_is_disabled_and_its_owner_emailed(running: Running) -> None:
    running.receiver.fail["/never"] = 1000
    async with running.client() as api:
        await api.patch("/v1/account", json={"notify_emails": ["ops@example.com"]})
        hook = (
            await api.post("/v1/webhooks", json={"url": f"{running.receiver_url}/never", "events": ["*"]})
        ).json()
        assert (await api.post(f"/v1/webhooks/{hook['id']}/test")).status_code == 202
        state: dict[str, object] = {}
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            state = (await api.get(f"/v1/webhooks/{hook['id']}")).json()
            if state["enabled"] is False:
                break
            await asyncio.sleep(0.2)
    assert state["enabled"] is False
    assert "no delivery to it has succeeded since" in str(state["disabled_reason"])
    await until(lambda: any("stopped sending webhooks" in s for s in _mail_to(running, "ops@example.com")))
    disabled = [m for m in running.mailbox.messages if "stopped sending webhooks" in str(m["subject"])]
    assert len(disabled) == 1
    assert f"{running.receiver_url}/never" in str(disabled[0]["subject"])


async def test_an_endpoint_that_answers_410_is_disabled_and_the_notice_outlasts_a_mail_server_deferring_it(
    running: Running,
) -> None:
    running.receiver.script["/gone"] = [(410, {})] * 5
    running.mailbox.defer["owner@example.com"] = 1  # the mail server is busy the first time
    async with running.client() as api:
        await api.patch("/v1/account", json={"notify_emails": ["owner@example.com"]})
        hook = (
            await api.post("/v1/webhooks", json={"url": f"{running.receiver_url}/gone", "events": ["*"]})
        ).json()
        assert (await api.post(f"/v1/webhooks/{hook['id']}/test")).status_code == 202
        await until(
            lambda: any("stopped sending webhooks" in s for s in _mail_to(running, "owner@example.com"))
        )
        assert (await api.get(f"/v1/webhooks/{hook['id']}")).json()["enabled"] is False
    assert running.mailbox.defer["owner@example.com"] == 0  # it was deferred, and sent on the retry
    await asyncio.sleep(2)  # a second send would have come by now
    notices = [s for s in _mail_to(running, "owner@example.com") if "stopped sending webhooks" in s]
    assert len(notices) == 1
