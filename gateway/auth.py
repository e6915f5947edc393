"""Bearer API keys. Keys are random, shown once, and stored only as a SHA-256 hash."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway import repository as repo
from gateway.deps import DepsDep
from gateway.errors import ApiError, Forbidden, InvalidRequest, Unauthorized
from gateway.links import LinkExpired, LinkRefused, Links, rendition_file, thumbnail_file
from gateway.repository import Client, Conn
from shared.ids import new_id

KEY_PREFIX = "vidq_"

#: Documents the scheme in OpenAPI (``/docs`` gets its Authorize button, generated clients send
#: the key); the header is read and refused below, with vidq's own problem document.
BEARER = HTTPBearer(auto_error=False, scheme_name="apiKey", description="Authorization: Bearer vidq_…")


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def create_client_with_key(conn: Conn, name: str) -> tuple[Client, str]:
    """A new client named ``name`` and its first API key (returned in clear, once)."""
    client = Client(new_id("cli"), name, new_signing_secret())
    api_key = new_api_key()
    async with conn.transaction():
        await repo.insert_client(conn, client.id, client.name, client.callback_secret)
        await repo.insert_api_key(conn, new_id("key"), client.id, name, api_key)
    return client, api_key


async def current_client(
    request: Request,
    deps: DepsDep,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Client:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    async with deps.pool.acquire() as conn:
        client = await repo.client_by_key(conn, token.strip())
    if client is None:
        raise Unauthorized("this API key is not valid (unknown or revoked)")
    return client


ClientDep = Annotated[Client, Depends(current_client)]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who downloads a video's file: its owner by API key, or whoever holds a signed link."""

    client: Client | None
    #: A signed link's remaining seconds (``None``: the API key).
    left_s: int | None = None

    @property
    def cache_control(self) -> str:
        """Kept by the browser only: for as long as the link lasts, or checked again each time."""
        return "private, no-cache" if self.left_s is None else f"private, max-age={self.left_s}"


async def media_viewer(
    request: Request,
    deps: DepsDep,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    expires: Annotated[
        int | None, Query(ge=0, le=2**53, description="With `signature`: a signed link's expiry (Unix time).")
    ] = None,
    signature: Annotated[
        str | None,
        Query(max_length=100, description="A signed link's signature, instead of the API key."),
    ] = None,
) -> Viewer:
    """The API key's client, or a valid signed link (``gateway/links.py``).

    A signed link is good for the one file it was made for (a rendition, or a thumbnail at one
    ``width``); an altered or expired one is a 403 that says so.
    """
    if expires is None and signature is None:
        return Viewer(await current_client(request, deps, None))
    if expires is None or signature is None:
        raise InvalidRequest("a signed link carries both 'expires' and 'signature'")
    video_id, quality = request.path_params["video_id"], request.path_params.get("quality")
    file = rendition_file(quality) if quality else thumbnail_file(request.query_params.get("width", ""))
    try:
        return Viewer(None, deps.links.check(video_id, file, expires, signature))
    except LinkExpired as exc:
        raise Forbidden(f"{exc}; GET /v1/videos/{video_id} has fresh ones") from None
    except LinkRefused as exc:
        raise Forbidden(str(exc)) from None


ViewerDep = Annotated[Viewer, Depends(media_viewer)]


def check_signed_url(
    links: Links, owner_id: str, file: str, expires: str, signature: str, *, expired: ApiError
) -> None:
    """An upload URL's ``expires`` and ``signature`` (as its query gave them), checked.

    Missing or malformed: 422; altered or made for another file: 403; expired: ``expired``.
    """
    if not (expires.isascii() and expires.isdigit()) or not signature:
        raise InvalidRequest(
            "use the upload's url as it was given: its expires and signature are missing or bad"
        )
    try:
        links.check(owner_id, file, int(expires), signature)
    except LinkExpired:
        raise expired from None
    except LinkRefused as exc:
        raise Forbidden(str(exc)) from None
