"""``python -m gateway`` serves the API; ``keys create | ls | revoke`` manage API keys, ``migrate``
applies the gateway's migrations, ``links rotate [--revoke]`` signs new media links with a new key."""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial

import asyncpg
import uvicorn

from gateway import keys
from gateway.app import preflight
from gateway.links import MEDIA_LINKS
from gateway.repository import add_signing_key
from gateway.settings import GatewaySettings
from shared.db import migrate_all
from shared.logging import configure_logging
from shared.runtime import run_service


async def _keys(settings: GatewaySettings, args: argparse.Namespace) -> None:
    sys.stderr.write(f"{keys.where(str(settings.database_url))}\n")
    await migrate_all(settings, ("gateway",))
    conn = await asyncpg.connect(str(settings.database_url))
    try:
        if args.action == "create":
            client, api_key = await keys.create_key(conn, args.name, args.client)
            sys.stdout.write(api_key + "\n")
            sys.stderr.write(
                f"client {client.id} ({client.name}); callback_url events are signed with "
                f"{client.callback_secret}\n"
            )
        elif args.action == "ls":
            keys.print_keys(await keys.list_keys(conn, revoked=args.all))
        else:
            row = await keys.revoke_key(conn, args.key)
            sys.stderr.write(
                f"key {row.id} ({row.prefix}…) of client {row.client_id} ({row.client_name}) "
                + ("was already revoked\n" if row.revoked_at else "is revoked: refused from now on\n")
            )
    finally:
        await conn.close()


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
    key_commands = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = key_commands.add_parser(
        "create", help="create a client and print its new API key (or, with --client, another key of its)"
    )
    create.add_argument("--name", required=True, help="who the key is for")
    create.add_argument(
        "--client", help="an existing client's id (cli_…): a second key, to rotate without a gap"
    )
    listing = key_commands.add_parser(
        "ls", help="list the API keys (ids, prefixes and clients; not the keys)"
    )
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    revoke = key_commands.add_parser("revoke", help="revoke an API key: refused from the next request on")
    revoke.add_argument("key", help="the key's id (key_…) or its prefix, as keys ls shows them")
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
        run_service(partial(_keys, settings, args))
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
