"""One slow endpoint never delays the others (per-endpoint concurrency, deferral not waiting)."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.harness import until
from tests.e2e.stack import Running

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Four delivery slots per notifier, at most two of them for one endpoint.
STACK_ENV = {
    "VIDQ_NOTIFIER_CONCURRENCY": "4",
    "VIDQ_NOTIFIER_ENDPOINT_CONCURRENCY": "2",
    "VIDQ_WEBHOOK_TIMEOUT_S": "8",
}
HANG_S = 5.0


async def test_a_hanging_endpoint_does_not_delay_another(running: Running) -> None:
    running.receiver.hang["/slow"] = HANG_S
    async with running.client() as api:
        slow = (
            await api.post("/v1/webhooks", json={"url": f"{running.receiver_url}/slow", "events": ["*"]})
        ).json()
        fast = (
            await api.post("/v1/webhooks", json={"url": f"{running.receiver_url}/fast", "events": ["*"]})
        ).json()
        for _ in range(8):  # more than all the notifier's slots
            assert (await api.post(f"/v1/webhooks/{slow['id']}/test")).status_code == 202
        await until(lambda: len(running.receiver.at("/slow")) >= 2)
        started = asyncio.get_running_loop().time()
        assert (await api.post(f"/v1/webhooks/{fast['id']}/test")).status_code == 202
        await until(lambda: running.receiver.at("/fast"), timeout=HANG_S)
        waited = asyncio.get_running_loop().time() - started
        # The slow endpoint never had more than two requests open, so the fast one got a slot at once.
        assert waited < 2.0
        assert len(running.receiver.at("/slow")) <= 4
        # Every slow delivery is still made, in turns of two.
        await until(lambda: len(running.receiver.at("/slow")) == 8, timeout=60)
