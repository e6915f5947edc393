"""Which management API a service sets its policies through (``shared/messaging/prepare.py``)."""

from __future__ import annotations

import pytest

from shared.messaging.management import ManagementRefused
from shared.messaging.prepare import management_url


@pytest.mark.parametrize(
    ("amqp", "configured", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/vidq", None, "http://guest:guest@127.0.0.1:15672"),
        ("amqp://guest:guest@127.0.0.1/vidq", None, "http://guest:guest@127.0.0.1:15672"),
        ("amqps://u:p%40ss@rabbit.internal:5671/", None, "http://u:p%40ss@rabbit.internal:15672"),
        ("amqp://a:b@[::1]:5672/", None, "http://a:b@[::1]:15672"),
        # a configured URL without credentials takes the AMQP user's; with its own, it keeps them
        ("amqp://u:p@10.0.0.5:5672/", "https://mq.example.com", "https://u:p@mq.example.com:15672"),
        (
            "amqp://u:p@10.0.0.5:5672/",
            "https://ops:x@mq.example.com:443/",
            "https://ops:x@mq.example.com:443/",
        ),
        ("amqp://u:p@127.0.0.1:25672/", "http://127.0.0.1:25673", "http://u:p@127.0.0.1:25673"),
    ],
)
def test_the_management_url(amqp: str, configured: str | None, expected: str) -> None:
    assert management_url(amqp, configured) == expected


def test_a_broker_on_another_port_needs_its_management_url_said() -> None:
    # its management API is not the one on 15672 (that may be another broker's)
    with pytest.raises(ManagementRefused, match="VIDQ_BROKER_MANAGEMENT_URL"):
        management_url("amqp://guest:guest@127.0.0.1:25672/vidq")
