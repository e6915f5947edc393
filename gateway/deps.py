"""The gateway's dependencies: one typed bag for consumers, ``Annotated`` aliases for routes."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import asyncpg
from fastapi import Depends, Request

from gateway.imports import ImportSlots
from gateway.links import KeyRing, Links
from gateway.settings import GatewaySettings
from shared.messaging.publisher import Publisher
from shared.storage import LocalStorage

if TYPE_CHECKING:
    from gateway.streams import LiveHub


@dataclass(frozen=True, slots=True)
class GatewayDeps:
    settings: GatewaySettings
    pool: asyncpg.Pool
    publisher: Publisher
    storage: LocalStorage
    #: Slots for ffprobe runs (``VIDQ_GATEWAY_PROBE_CONCURRENCY``).
    probes: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(os.cpu_count() or 2))
    #: The keys of signed media links (``signing_keys``, refreshed); none: no signed links.
    key_ring: KeyRing = field(default_factory=KeyRing)
    #: Imports downloading at once (``VIDQ_MAX_IMPORTS``, ``VIDQ_MAX_IMPORTS_PER_CLIENT``).
    imports: ImportSlots = field(init=False)

    def __post_init__(self) -> None:
        slots = ImportSlots(self.settings.max_imports, self.settings.max_imports_per_client)
        object.__setattr__(self, "imports", slots)  # frozen: set once, here

    @property
    def base_url(self) -> str:
        return str(self.settings.public_url).rstrip("/")

    @property
    def links(self) -> Links:
        return Links(self.base_url, self.key_ring.keys, self.settings.media_link_ttl_s)


def _deps(request: Request) -> GatewayDeps:
    deps: GatewayDeps = request.app.state.deps
    return deps


def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def _hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.hub
    return hub


DepsDep = Annotated[GatewayDeps, Depends(_deps)]
SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
HubDep = Annotated["LiveHub", Depends(_hub)]
