"""The whole stack as real processes, started by the project's own launcher code.

One stack per test module (``tests/e2e/stack.py``): its own vhost, database, storage folder and
gateway port, short retry delays, an SMTP server and a webhook receiver in the test process.
A test module may tune its stack with a ``STACK_ENV`` dict of ``VIDQ_*`` values, and one
service of it with ``STACK_SERVICE_ENV`` (``{"notifier": {"VIDQ_…": …}}``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.e2e.stack import Running, running_stack

__all__ = ["Running"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    async with running_stack(
        tmp_path_factory.mktemp("stack"),
        getattr(request.module, "STACK_ENV", {}),
        service_overrides=getattr(request.module, "STACK_SERVICE_ENV", {}),
    ) as stack:
        yield stack
