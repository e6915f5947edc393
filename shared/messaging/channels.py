"""Noticing a channel that aio-pika's robust layer did not bring back.

``connect_robust`` reopens channels and restores consumers after a reconnect, but a known class
of aio-pika bugs (a close during the restore, a consume racing it) can leave a channel closed
for good on a connection that is up again: its consumers silently gone, its publishes waiting
forever. The services therefore check for themselves (written for vidq): a channel that stays
closed while its connection is up, for longer than any restore takes, is replaced by a new one.
"""

from __future__ import annotations

import time

from aio_pika.abc import AbstractChannel, AbstractConnection

#: A channel closed this long while its connection is up is taken for lost and replaced.
CHANNEL_STALE_S = 10.0


class StaleChannel:
    """Tells when one channel has been closed, on a live connection, for ``stale_s`` seconds."""

    def __init__(self, stale_s: float = CHANNEL_STALE_S) -> None:
        self.stale_s = stale_s
        self._closed_since: float | None = None

    def lost(self, channel: AbstractChannel, connection: AbstractConnection | None) -> bool:
        up = connection is None or (not connection.is_closed and connection.connected.is_set())
        if not (channel.is_closed and up):
            self._closed_since = None
            return False
        now = time.monotonic()
        if self._closed_since is None:
            self._closed_since = now
        return now - self._closed_since >= self.stale_s

    def reset(self) -> None:
        self._closed_since = None
