"""make run's checks before it starts anything: ports taken, a stack's vhosts that disagree."""

from __future__ import annotations

import socket

import pytest

from shared.bootstrap import bootstrap_broker
from shared.devstack.__main__ import DevstackSettings, _ports_taken
from shared.errors import StartupError
from shared.settings import AdminSettings
from tests.settings import make

pytestmark = pytest.mark.unit


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_port_another_program_listens_on_is_named_before_anything_starts() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = other.getsockname()[1]
        free = _free_port()
        settings = make(
            DevstackSettings,
            public_url=f"http://127.0.0.1:{busy}",
            smtp_url=f"smtp://127.0.0.1:{free}",
            metrics_port=0,
        )
        assert _ports_taken(settings) == [f"the gateway's port 127.0.0.1:{busy}"]
        mail = make(
            DevstackSettings,
            public_url=f"http://127.0.0.1:{free}",
            smtp_url=f"smtp://127.0.0.1:{busy}",
            metrics_port=0,
        )
        assert _ports_taken(mail) == [f"the mail sink's port 127.0.0.1:{busy}"]
        # the workers' metrics ports are the given one and the next two
        metrics = make(
            DevstackSettings,
            public_url=f"http://127.0.0.1:{free}",
            smtp_url=f"smtp://127.0.0.1:{_free_port()}",
            metrics_port=busy - 1,
        )
        assert _ports_taken(metrics) == [f"the thumbnailer's metrics port 127.0.0.1:{busy}"]
    assert _ports_taken(settings) == []


async def test_a_service_url_on_another_vhost_than_the_stacks_is_refused_before_the_broker_is_asked() -> None:
    settings = make(
        AdminSettings,
        amqp_url="amqp://vidq:x@127.0.0.1:5672/elsewhere",
        transcoder_amqp_url="amqp://vidq-transcoder:y@127.0.0.1:5672/vidq",
        broker_admin_url="http://admin:z@127.0.0.1:9",  # nothing listens: asked, it would fail otherwise
    )
    with pytest.raises(StartupError, match="VIDQ_TRANSCODER_AMQP_URL names vhost 'vidq' but VIDQ_AMQP_URL"):
        await bootstrap_broker(settings)
