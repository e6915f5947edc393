"""Links to a video's files: plain (sent with the API key) and signed (for whoever holds them).

A browser's ``<video src>``, a link in an email and a webhook receiver's download cannot send
``Authorization: Bearer``. So each ready file also has a *signed* link, as S3's presigned URLs
and Cloudflare Stream's signed URLs have it: ``?expires=<unix time>&signature=<HMAC>``, good for
that one file of that one video until it expires (``VIDQ_MEDIA_LINK_TTL_S``, a week by default),
and refused after, or if any part of it was changed. The HMAC-SHA256 (the standard library's
``hmac``; a few lines by hand) signs the video, the file and the expiry with a key the gateways
keep in their database (``signing_keys``): made at the first start, never configured by hand.
``python -m gateway links rotate`` adds a newer key: every gateway signs with it within a minute
(:class:`KeyRing`), and still accepts the older ones while links they signed may be unexpired;
``--revoke`` refuses every link given out so far. Deleting a video makes its links answer 404.

The expiry is rounded up to the hour, so a video read twice within the hour carries the same
links (caches and clients see one URL), and a link is good for between the TTL and an hour more.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

#: Signed links are stable within this many seconds.
_ROUND_S = 3600
#: The name of the key of signed links in ``signing_keys``.
MEDIA_LINKS = "media_links"


#: The "file" a direct upload's signature names (its id stands where a video's would).
UPLOAD = "upload"
#: The "file" the signature of a resumable upload made through a direct upload names.
RESUMABLE = "resumable"


def rendition_file(quality: str) -> str:
    """The file a rendition's signature names (never a thumbnail's, whatever the path says)."""
    return f"renditions/{quality}"


def thumbnail_file(width: int | str) -> str:
    """The file a thumbnail's signature names: one width (``?width=`` as the link writes it)."""
    return f"thumbnail/{width}"


class LinkRefused(Exception):
    """A signed link that is expired, altered, or made for another file."""


class LinkExpired(LinkRefused):
    """A signed link that was good, and has expired."""


@dataclass(frozen=True, slots=True)
class Links:
    """How the gateway writes (and checks) the links of a video's files."""

    base_url: str
    #: The keys: the first signs, every one is accepted; none: no signed links are written or
    #: accepted.
    keys: tuple[bytes, ...] = ()
    ttl_s: int = 7 * 24 * 3600

    def rendition(self, video_id: str, quality: str) -> str:
        return f"{self.base_url}/v1/videos/{video_id}/renditions/{quality}"

    def thumbnail(self, video_id: str, width: int) -> str:
        return f"{self.base_url}/v1/videos/{video_id}/thumbnail?width={width}"

    def signed_rendition(self, video_id: str, quality: str, *, now: float | None = None) -> str | None:
        query = self._signed_query(video_id, rendition_file(quality), now)
        return f"{self.rendition(video_id, quality)}?{query}" if query else None

    def signed_thumbnail(self, video_id: str, width: int, *, now: float | None = None) -> str | None:
        query = self._signed_query(video_id, thumbnail_file(width), now)
        return f"{self.thumbnail(video_id, width)}&{query}" if query else None

    def upload(self, upload_id: str, expires: int) -> str | None:
        """A direct upload's URL: signed until the upload times out (not rounded)."""
        query = self._query(upload_id, UPLOAD, expires)
        return f"{self.base_url}/v1/uploads/{upload_id}?{query}" if query else None

    def resumable(self, upload_id: str, expires: int) -> str | None:
        """A resumable upload's URL for a page without the API key: signed until it expires."""
        query = self._query(upload_id, RESUMABLE, expires)
        return f"{self.base_url}/v1/tus/{upload_id}?{query}" if query else None

    def _signed_query(self, video_id: str, file: str, now: float | None) -> str | None:
        at = time.time() if now is None else now
        return self._query(video_id, file, -(-int(at + self.ttl_s) // _ROUND_S) * _ROUND_S)

    def _query(self, owner_id: str, file: str, expires: int) -> str | None:
        """``expires=…&signature=…`` with the newest key; ``None`` without keys."""
        if not self.keys:
            return None
        return f"expires={expires}&signature={self._signature(self.keys[0], owner_id, file, expires)}"

    def check(
        self, video_id: str, file: str, expires: int, signature: str, *, now: float | None = None
    ) -> int:
        """The seconds a signed link has left, or :class:`LinkRefused` saying why it is refused."""
        if not self.keys:
            raise LinkRefused("signed links are not enabled on this gateway")
        given = signature.encode()
        if not any(
            hmac.compare_digest(given, self._signature(key, video_id, file, expires).encode())
            for key in self.keys
        ):
            raise LinkRefused("the link's signature does not match it (altered, or made for another file)")
        at = time.time() if now is None else now
        if expires <= at:
            raise LinkExpired(
                f"the link expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))}"
            )
        return expires - int(at)

    @staticmethod
    def _signature(key: bytes, video_id: str, file: str, expires: int) -> str:
        digest = hmac.digest(key, f"{video_id}/{file}/{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def accepted_keys(keys: Sequence[tuple[bytes, datetime]], ttl_s: int, now: datetime) -> tuple[bytes, ...]:
    """The keys to accept, of those not revoked (newest first, with when each was made).

    The newest, and each older one while links it signed may be unexpired: it signed until the
    next one was made, links for at most the TTL and the hour an expiry is rounded up by.
    """
    if not keys:
        return ()
    kept = [keys[0][0]]
    for (secret, _), (_, superseded_at) in zip(keys[1:], keys, strict=False):
        if (now - superseded_at).total_seconds() < ttl_s + _ROUND_S:
            kept.append(secret)
    return tuple(kept)


class KeyRing:
    """The keys one gateway signs and checks links with; refreshed from the database."""

    def __init__(self, keys: tuple[bytes, ...] = ()) -> None:
        self.keys = keys
