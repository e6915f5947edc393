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


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return b"%s.%d.%s" % (msg_id.encode(), timestamp, body)


def _signature(secret: str, content: bytes) -> str:
    return "v1," + base64.b64encode(hmac.digest(secret_bytes(secret), content, "sha256")).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` for ``body`` sent as ``msg_id`` at unix time ``timestamp``."""
    return _signature(secret, _signed_content(msg_id, timestamp, body))


def headers(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret given."""
    content = _signed_content(msg_id, timestamp, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join([_signature(s, content) for s in secrets]),
    }
