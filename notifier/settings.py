"""Notifier settings: SMTP, webhook delivery and the destination allowlist."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.destinations import AllowHosts
from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    #: ``smtp://[user:password@]host:port`` (``?starttls=true`` to upgrade) or ``smtps://`` (TLS).
    smtp_url: str = "smtp://127.0.0.1:1025"
    smtp_from: str = "vidq <vidq@localhost>"
    smtp_timeout_s: float = 30.0
    #: Hosts, IPs or CIDR networks that webhooks may reach although they are private, loopback
    #: or link-local (e.g. ``127.0.0.1,10.0.0.0/8,hooks.internal``). Empty: public addresses only.
    webhook_allow_hosts: AllowHosts = ()
    webhook_timeout_s: float = Field(default=15.0, gt=0)
    #: Bytes of a receiver's response body kept in the delivery log.
    webhook_response_log_bytes: int = 2048
    #: Deliveries attempted at once by this process (the deliveries queue's prefetch). Each
    #: endpoint has at most ``notifier_endpoint_concurrency`` of them, so a generous value costs a
    #: hanging endpoint nothing and lets fast ones share the load (and the writes to the log).
    notifier_concurrency: int = Field(default=200, ge=1)
    notifier_max_connections: int = Field(default=200, ge=1)
    #: Deliveries in flight to one endpoint (URL) at once in this process; more
    #: wait in the shortest delay queue, so one slow endpoint never holds the others' slots.
    notifier_endpoint_concurrency: int = Field(default=10, ge=1)
    #: A delivery waits for one of those slots while the endpoint answers: while a request to it
    #: started or ended within this many seconds (its slots turn over). A delivery to an
    #: endpoint that has been quiet this long is deferred.
    notifier_endpoint_wait_s: float = Field(default=0.5, ge=0)
    #: An endpoint with no successful delivery for this long is disabled and its owner emailed.
    webhook_disable_after_s: float = Field(default=5 * 86400, gt=0)
    #: Events, their deliveries and attempts, and the email log are kept this long after the
    #: event arrived, then pruned (a delivery still being retried is kept until it settles).
    #: Must exceed ``webhook_disable_after_s``: the disable rule reads that much history.
    delivery_log_retention_s: float = Field(default=30 * 86400, gt=0)
    #: How often a notifier looks for rows past their retention (one replica at a time prunes).
    delivery_log_prune_every_s: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _retention_covers_the_disable_rule(self) -> NotifierSettings:
        if self.delivery_log_retention_s <= self.webhook_disable_after_s:
            raise ValueError(
                "VIDQ_DELIVERY_LOG_RETENTION_S must be longer than VIDQ_WEBHOOK_DISABLE_AFTER_S "
                f"({self.delivery_log_retention_s:g} <= {self.webhook_disable_after_s:g} s): an endpoint "
                "is disabled after that long of failures, read from the delivery log"
            )
        return self
