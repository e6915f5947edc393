"""Standard Webhooks signatures (https://www.standardwebhooks.com), as pure functions.

``webhook-signature`` is ``v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``; the
secret is ``whsec_`` + base64 of its bytes. Several space-separated signatures are sent while a
rotated secret is still in its grace period, so receivers can switch without downtime. The
``standardwebhooks`` and ``svix`` libraries verify these unchanged (tested).
"""

from __future__ import annotations

import base64
import functools
import hmac
from collections.abc import Iterable

PREFIX = "whsec_"


@functools.lru_cache(maxsize=4096)
def secret_bytes(secret: str) -> bytes:
    """The key bytes of a ``whsec_…`` secret."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` for ``body`` sent as ``msg_id`` at unix time ``timestamp``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.digest(secret_bytes(secret), content, "sha256")
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret given."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
    }
