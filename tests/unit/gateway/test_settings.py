"""Where the gateway listens: ``VIDQ_GATEWAY_PORT``, else a local ``VIDQ_PUBLIC_URL``'s port, else 8000."""

from __future__ import annotations

import pytest

from gateway.settings import GatewaySettings
from tests.settings import make


@pytest.mark.parametrize(
    ("public_url", "port", "listens"),
    [
        ("http://127.0.0.1:8000", None, 8000),  # the defaults
        ("http://127.0.0.1:18080", None, 18080),  # SPEC names VIDQ_PUBLIC_URL; the gateway serves it
        ("http://localhost:9001/", None, 9001),
        ("http://[::1]:9002", None, 9002),
        ("http://127.0.0.1:18080", 8001, 8001),  # an explicit port wins (a local proxy owns 18080)
        ("https://videos.example.com", None, 8000),  # a public name is a proxy's, never bound here
        ("https://videos.example.com:8443", None, 8000),
        ("http://127.0.0.1", None, 8000),  # no port of its own: port 80 is not the gateway's
    ],
)
def test_the_listening_port(public_url: str, port: int | None, listens: int) -> None:
    settings = make(GatewaySettings, public_url=public_url, gateway_port=port)
    assert settings.listen_port == listens
