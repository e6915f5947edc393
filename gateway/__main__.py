"""``python -m gateway`` serves the API; ``keys create --name NAME`` makes a key, ``migrate``
applies the gateway's migrations, ``links rotate [--revoke]`` signs new media links with a new key."""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial

import asyncpg
import uvicorn

from gateway.app import preflight
from gateway.auth import create_client_with_key
from gateway.links import MEDIA_LINKS
from gateway.repository import add_signing_key
from gateway.settings import GatewaySettings
from shared.db import migrate_all
from shared.logging import configure_logging
from shared.runtime import run_service


async def _create_key(settings: GatewaySettings, name: str) -> None:
    await migrate_all(settings, ("gateway",))
    conn = await asyncpg.connect(str(settings.database_url))
    try:
        client, api_key = await create_client_with_key(conn, name)
    finally:
        await conn.close()
    sys.stdout.write(api_key + "\n")
    sys.stderr.write(
        f"client {client.id} ({name}); callback_url events are signed with {client.callback_secret}\n"
    )


async def _rotate_link_key(settings: GatewaySettings, *, revoke: bool) -> None:
    await migrate_all(settings, ("gateway",))
    conn = await asyncpg.connect(str(settings.database_url))
    try:
        await add_signing_key(conn, MEDIA_LINKS, revoke_others=revoke)
    finally:
        await conn.close()
    sys.stderr.write(
        "new links are signed with a new key within a minute"
        + ("; every link given out before is refused from then on\n" if revoke else "\n")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="the vidq gateway")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the REST API (the default)")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a client and print its new API key")
    create.add_argument("--name", required=True, help="who the key is for")
    commands.add_parser("migrate", help="apply the gateway's database migrations")
    links = commands.add_parser("links", help="signed media links").add_subparsers(
        dest="action", required=True
    )
    rotate = links.add_parser(
        "rotate",
        help="sign new links with a new key (every gateway within a minute); links given out "
        "before keep working until they expire, unless --revoke",
    )
    rotate.add_argument(
        "--revoke", action="store_true", help="refuse every signed link given out so far (a leaked key)"
    )
    args = parser.parse_args(argv)

    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    if args.command == "keys":
        run_service(partial(_create_key, settings, args.name))
    elif args.command == "links":
        run_service(partial(_rotate_link_key, settings, revoke=args.revoke))
    elif args.command == "migrate":
        run_service(partial(migrate_all, settings, ("gateway",)))
    else:
        run_service(partial(preflight, settings))
        # uvicorn re-raises SIGTERM once it has shut down gracefully; a deploy's SIGTERM that
        # drained cleanly is a success, so that second SIGTERM ends the process with status 0.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        uvicorn.run(
            "gateway.app:create_app",
            factory=True,
            host=settings.gateway_host,
            port=settings.listen_port,
            loop="uvloop",
            http="httptools",  # a dependency of the gateway: h11 would halve upload throughput
            log_config=None,
            timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        )


if __name__ == "__main__":
    main()
