"""Liveness, readiness (broker and database) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import repository as repo
from gateway.auth import ClientDep
from gateway.deps import DepsDep, SettingsDep
from gateway.errors import PROBLEM_JSON, problem
from gateway.repository import Client
from gateway.schemas import Account, AccountUpdate
from shared.messaging.asyncapi import document
from shared.messaging.topology import build

router = APIRouter(tags=["ops"])


@router.get("/healthz")
@router.head("/healthz", include_in_schema=False)  # load balancers that probe with HEAD
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"content": {PROBLEM_JSON: {}}}})
@router.head("/readyz", include_in_schema=False)
async def readyz(request: Request, deps: DepsDep) -> JSONResponse:
    """Readiness: the database answers and the broker connection is up (not reconnecting)."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            await deps.pool.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    connection = request.app.state.connection
    # a robust connection that lost the broker is not closed: it is reconnecting, and not ready
    up = connection is not None and not connection.is_closed and connection.connected.is_set()
    checks["broker"] = "ok" if up else "unavailable"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ok", "checks": checks})
    failing = ", ".join(k for k, v in checks.items() if v != "ok")
    body = problem(503, "not-ready", "Not ready", f"not ready: {failing} unavailable", checks=checks)
    return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)


@router.get("/asyncapi.json")
async def asyncapi(settings: SettingsDep) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of vidq's exchanges, queues and messages (no credentials)."""
    broker = urlparse(str(settings.amqp_url))
    vhost = broker.path.lstrip("/") or "/"
    return document(build(settings), host=f"{broker.hostname}:{broker.port or 5672}", vhost=vhost)


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus metrics of this gateway process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _account(client: Client) -> Account:
    return Account(
        client_id=client.id,
        name=client.name,
        callback_secret=client.callback_secret,
        notify_emails=list(client.notify_emails),
    )


_ACCOUNT_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in {401: "Missing or invalid API key", 422: "Invalid fields"}.items()
}


@router.get("/v1/account", response_model=Account, tags=["account"], responses=_ACCOUNT_PROBLEMS)
async def read_account(client: ClientDep) -> Account:
    """The calling client, with the secret that signs its videos' callback_url deliveries."""
    return _account(client)


@router.patch("/v1/account", response_model=Account, tags=["account"], responses=_ACCOUNT_PROBLEMS)
async def update_account(body: AccountUpdate, client: ClientDep, deps: DepsDep) -> Account:
    """Set the addresses that hear about every video and about disabled endpoints."""
    emails = list(dict.fromkeys(str(e) for e in body.notify_emails))
    async with deps.pool.acquire() as conn:
        return _account(await repo.set_notify_emails(conn, client.id, emails))
