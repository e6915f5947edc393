"""Gateway settings: the shared ones plus HTTP, upload limits and idempotency."""

from __future__ import annotations

import os

from pydantic import Field

from shared.destinations import AllowHosts
from shared.settings import ServiceSettings, gateway_listen_port


class GatewaySettings(ServiceSettings):
    gateway_host: str = "127.0.0.1"
    #: Unset: the port of ``VIDQ_PUBLIC_URL`` when that URL is this machine's loopback with a
    #: port of its own (``http://127.0.0.1:9000`` → 9000: the gateway serves it directly), else
    #: 8000. Set it when a proxy on this machine owns the public URL's port.
    gateway_port: int | None = Field(default=None, ge=1, le=65535)
    max_upload_bytes: int = Field(default=10 * 1024**3, ge=1)
    max_duration_s: float = Field(default=4 * 3600, gt=0)
    #: Largest frame accepted, in pixels (8K UHD = 7680 x 4320).
    max_pixels: int = Field(default=7680 * 4320, gt=0)
    max_metadata_bytes: int = 4096
    #: How long a signed link to a rendition or thumbnail is good for (``gateway/links.py``).
    media_link_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    #: The notifier's allowlist (``VIDQ_WEBHOOK_ALLOW_HOSTS``), read here too: a webhook or
    #: ``callback_url`` whose host is a private, loopback or link-local address not on it is
    #: refused when registered (``shared/destinations.py``).
    webhook_allow_hosts: AllowHosts = ()
    #: Hosts a video may be imported from (``POST /v1/videos`` with a ``url``) although they are
    #: private, loopback or link-local addresses (``shared/destinations.py``): none by default.
    import_allow_hosts: AllowHosts = ()
    #: An import's whole download, and the longest wait for its next bytes.
    import_timeout_s: float = Field(default=3600.0, gt=0)
    import_read_timeout_s: float = Field(default=60.0, gt=0)
    #: Imports one gateway process downloads at once, in all and for one client; one more is
    #: refused (``503`` / ``429`` with ``Retry-After``), not queued (``gateway/imports.py``).
    max_imports: int = Field(default=32, ge=1)
    max_imports_per_client: int = Field(default=4, ge=1)
    #: A resumable (tus) upload that received nothing for this long is removed (its expiry is
    #: pushed back by each PATCH that brings bytes).
    #: At least two minutes: longer than a PATCH's body may stay silent (60 s) before it ends.
    resumable_expiry_s: float = Field(default=24 * 3600.0, ge=120)
    #: Resumable uploads one client may have open (not finished) at once: each holds a partial
    #: file of up to ``max_upload_bytes`` until it finishes or expires.
    max_open_resumable_uploads: int = Field(default=100, ge=1)
    #: Endpoints one client may have at once (Stripe allows 16): every event is fanned out to
    #: each matching one, and the list is answered in one page.
    max_webhooks_per_client: int = Field(default=50, ge=1)
    #: ffprobe runs at once (uploads beyond wait their turn); default: the number of CPUs. An
    #: ffprobe is CPU work, mostly its own start; a burst of uploads probed all at once would
    #: share the CPUs with the gateway itself and stall everything it does meanwhile.
    gateway_probe_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1)
    #: How long an Idempotency-Key is remembered.
    idempotency_ttl_s: int = 24 * 3600
    sse_keepalive_s: float = 15.0
    #: The live queue stays bound this long after the last stream of this process ends (a
    #: client that reconnects finds it bound; then events stop costing this gateway anything).
    live_unbind_after_s: float = Field(default=5.0, ge=0)
    #: Projection consumer prefetch (reports are small; the video row lock serialises a video).
    projection_prefetch: int = 20
    outbox_batch: int = 200
    outbox_poll_s: float = 2.0
    #: How often the scheduler looks for periodic jobs that are due.
    scheduler_tick_s: float = Field(default=5.0, gt=0)
    #: A rendition queued or processing without any news for this long is dispatched again.
    stuck_after_s: float = Field(default=1800.0, gt=0)
    #: Outbox rows older than this unpublished are logged as an error (the gauges are exported
    #: whatever this is).
    outbox_alert_after_s: float = Field(default=60.0, gt=0)
    #: Temporary files (uploads never probed, encodes of dead workers) older than this are removed.
    abandoned_file_after_s: float = Field(default=3600.0, gt=0)
    #: Published outbox rows, processed report ids and expired direct and resumable uploads are
    #: kept this long.
    retention_s: float = Field(default=7 * 86400.0, gt=0)

    @property
    def listen_port(self) -> int:
        """The port the HTTP server binds (see ``gateway_port``)."""
        return gateway_listen_port(str(self.public_url), self.gateway_port)
