"""The web page is served by the gateway as static files, under a strict policy, outside the API docs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.api.web import WEB_DIR
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.settings import make


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(make(GatewaySettings)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_the_root_serves_the_page_with_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/web/app.js">' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_every_module_the_page_imports_is_served_as_javascript(client: httpx.AsyncClient) -> None:
    pending, served = ["app.js"], set[str]()
    while pending:
        name = pending.pop()
        response = await client.get(f"/web/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        served.add(name)
        imported = re.findall(r'from "\./([\w.-]+\.js)"', response.text)
        pending += [m for m in imported if m not in served]
    assert served == {p.name for p in WEB_DIR.glob("*.js")}
    style = await client.get("/web/style.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"


@pytest.mark.parametrize("name", ["nope.js", "..%2Fweb.py", "%2E%2E%2Fapi%2Fweb.py", "index.py"])
async def test_nothing_outside_the_page_files_is_served(client: httpx.AsyncClient, name: str) -> None:
    response = await client.get(f"/web/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_page_stays_out_of_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/web")]
