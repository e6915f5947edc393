"""An error no handler takes is a 500 problem, logged once, and the connection is kept."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from gateway import errors


def _app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/late")
    async def late() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"the first bytes"
            raise RuntimeError("cut short")

        return StreamingResponse(body())

    return app


async def test_an_unexpected_error_is_a_500_problem_logged_once_and_not_raised_to_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # raised to the server (Starlette's way), uvicorn logged it again and closed the connection
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://vidq.test") as client:
        response = await client.get("/boom")

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:vidq:problem:internal"
    assert "a bug" not in response.text  # never a stack trace, nor the message, to a client
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in logged] == ["unhandled error on GET /boom"]
    assert logged[0].exc_info is not None


async def test_an_error_after_the_answer_started_still_reaches_the_server() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://vidq.test") as client:
        with pytest.raises(RuntimeError, match="cut short"):
            await client.get("/late")
