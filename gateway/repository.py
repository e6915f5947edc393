"""All of the gateway's SQL, one function per query. Callers own the transaction."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def hash_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str
    callback_secret: str
    notify_emails: tuple[str, ...] = ()


# -- clients and keys ---------------------------------------------------------------------------


async def insert_client(conn: Conn, client_id: str, name: str, callback_secret: str) -> None:
    await conn.execute(
        "INSERT INTO clients (id, name, callback_secret) VALUES ($1, $2, $3)",
        client_id,
        name,
        callback_secret,
    )


async def insert_api_key(conn: Conn, key_id: str, client_id: str, name: str, api_key: str) -> None:
    await conn.execute(
        "INSERT INTO api_keys (id, client_id, name, key_hash, prefix) VALUES ($1, $2, $3, $4, $5)",
        key_id,
        client_id,
        name,
        hash_key(api_key),
        api_key[:12],
    )


async def api_key_rows(conn: Conn, *, revoked: bool = False) -> list[asyncpg.Record]:
    """Every API key (the key itself is not stored), oldest first; ``revoked`` ones too if asked."""
    return list(
        await conn.fetch(
            """SELECT k.id, k.prefix, k.client_id, c.name AS client_name, k.name, k.created_at,
                      k.revoked_at
               FROM api_keys k JOIN clients c ON c.id = k.client_id
               WHERE $1 OR k.revoked_at IS NULL
               ORDER BY k.created_at, k.id""",
            revoked,
        )
    )


async def revoke_api_key(conn: Conn, key_id: str) -> None:
    await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id)


async def client_by_key(conn: Conn, api_key: str) -> Client | None:
    row = await conn.fetchrow(
        """SELECT c.id, c.name, c.callback_secret, c.notify_emails FROM api_keys k
           JOIN clients c ON c.id = k.client_id
           WHERE k.key_hash = $1 AND k.revoked_at IS NULL""",
        hash_key(api_key),
    )
    return _client(row) if row else None


def _client(row: asyncpg.Record) -> Client:
    return Client(row["id"], row["name"], row["callback_secret"], tuple(row["notify_emails"] or ()))


async def set_notify_emails(conn: Conn, client_id: str, emails: list[str]) -> Client:
    row = await conn.fetchrow(
        """UPDATE clients SET notify_emails = $2 WHERE id = $1
           RETURNING id, name, callback_secret, notify_emails""",
        client_id,
        emails,
    )
    assert row is not None  # noqa: S101 - the caller is this client
    return _client(row)


async def client_by_id(conn: Conn, client_id: str) -> Client | None:
    row = await conn.fetchrow(
        "SELECT id, name, callback_secret, notify_emails FROM clients WHERE id = $1", client_id
    )
    return _client(row) if row else None


# -- videos and renditions ----------------------------------------------------------------------


async def insert_video(
    conn: Conn,
    *,
    video_id: str,
    client_id: str,
    source: dict[str, Any],
    metadata: dict[str, Any],
    callback_url: str | None,
    notify_email: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO videos (id, client_id, status, source, metadata, callback_url, notify_email)
           VALUES ($1, $2, 'queued', $3, $4, $5, $6)""",
        video_id,
        client_id,
        source,
        metadata,
        callback_url,
        notify_email,
    )


#: Held while renditions join the queues, to the end of the transaction: the places counted for an
#: upload's answer then include every rendition queued before it, committed (one transaction
#: at a time takes the next places, as a bank's ticket machine gives one number at a time).
_PLACES_LOCK = 0x706C6163  # "plac"


async def take_queue_places(conn: Conn) -> None:
    """Queue renditions one transaction at a time (see :data:`_PLACES_LOCK`); in a transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _PLACES_LOCK)


async def insert_rendition(
    conn: Conn, *, video_id: str, quality: str, position: int, width: int, height: int, job_id: str
) -> None:
    await conn.execute(
        """INSERT INTO renditions (video_id, quality, position, width, height, job_id, queued_at)
           VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())""",
        video_id,
        quality,
        position,
        width,
        height,
        job_id,
    )


async def video_row(
    conn: Conn, video_id: str, *, client_id: str | None = None, lock: bool = False
) -> asyncpg.Record | None:
    sql = "SELECT * FROM videos WHERE id = $1 AND deleted_at IS NULL"
    args: list[Any] = [video_id]
    if client_id is not None:
        sql += " AND client_id = $2"
        args.append(client_id)
    if lock:
        sql += " FOR UPDATE"
    return await conn.fetchrow(sql, *args)


async def video_row_any(conn: Conn, video_id: str) -> asyncpg.Record | None:
    """The row even when deleted (the projection must know a report is for a deleted video)."""
    return await conn.fetchrow("SELECT * FROM videos WHERE id = $1 FOR UPDATE", video_id)


#: A queued rendition's place in its rung's queue: 1 + the renditions of its quality queued before
#: it and still waiting (the order their messages wait in ``vidq.transcode.<quality>``). The count
#: reads the index up to the rendition's place, so it is asked for only where a client reads one
#: video (its GET, its upload's answer), never in the projection's path.
_PLACE = """CASE WHEN r.status = 'queued' THEN 1 + (
               SELECT count(*) FROM renditions q
                WHERE q.status = 'queued' AND q.quality = r.quality
                  AND (q.queued_at, q.video_id) < (r.queued_at, r.video_id)
           ) END"""


async def rendition_rows(
    conn: Conn, video_ids: Sequence[str], *, places: bool = False
) -> list[asyncpg.Record]:
    """The videos' renditions; with ``places``, each queued one's ``queue_position`` (else null)."""
    place = _PLACE if places else "NULL::bigint"
    return list(
        await conn.fetch(
            f"""SELECT r.*, {place} AS queue_position FROM renditions r
                 WHERE r.video_id = ANY($1::text[]) ORDER BY r.video_id, r.position""",  # noqa: S608 - ours
            list(video_ids),
        )
    )


async def list_video_rows(
    conn: Conn, client_id: str, *, status: str | None, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    conditions = ["client_id = $1", "deleted_at IS NULL"]
    args: list[Any] = [client_id]
    if status is not None:
        args.append(status)
        conditions.append(f"status = ${len(args)}")
    if after is not None:
        args.extend(after)
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    return list(
        await conn.fetch(
            f"SELECT * FROM videos WHERE {' AND '.join(conditions)} "  # noqa: S608 - fixed fragments
            f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
            *args,
        )
    )


async def set_video_status(conn: Conn, video_id: str, status: str, error: str | None) -> None:
    await conn.execute(
        "UPDATE videos SET status = $2, error = $3, updated_at = now() WHERE id = $1",
        video_id,
        status,
        error,
    )


async def set_thumbnail(
    conn: Conn, video_id: str, status: str, widths: Iterable[int], error: str | None
) -> None:
    await conn.execute(
        """UPDATE videos SET thumbnail_status = $2, thumbnail_widths = $3, thumbnail_error = $4,
                  updated_at = now() WHERE id = $1""",
        video_id,
        status,
        list(widths),
        error,
    )


async def requeue_thumbnail(conn: Conn, video_id: str, run: str) -> None:
    """The poster asked for again, as run ``run``: queued, with no widths and no error."""
    await conn.execute(
        """UPDATE videos SET thumbnail_status = 'queued', thumbnail_widths = '{}', thumbnail_error = NULL,
                  thumbnail_run = $2, updated_at = now()
            WHERE id = $1""",
        video_id,
        run,
    )


async def requeue_rendition(conn: Conn, video_id: str, quality: str, job_id: str) -> None:
    """A rendition dispatched again under ``job_id``: queued from 0 %, at the end of its rung's queue."""
    await conn.execute(
        """UPDATE renditions SET status = 'queued', progress = 0, error = NULL, job_id = $3,
                  attempts = 0, queued_at = clock_timestamp(), eta_at = NULL, encode_seconds = NULL,
                  updated_at = now()
            WHERE video_id = $1 AND quality = $2""",
        video_id,
        quality,
        job_id,
    )


async def update_rendition(conn: Conn, video_id: str, quality: str, **fields: Any) -> None:
    assignments = ", ".join([*(f"{name} = ${i + 3}" for i, name in enumerate(fields)), "updated_at = now()"])
    await conn.execute(
        f"UPDATE renditions SET {assignments} WHERE video_id = $1 AND quality = $2",  # noqa: S608 - names are ours
        video_id,
        quality,
        *fields.values(),
    )


async def touch_video(conn: Conn, video_id: str) -> None:
    await conn.execute("UPDATE videos SET updated_at = now() WHERE id = $1", video_id)


async def mark_video_deleted(conn: Conn, video_id: str) -> None:
    await conn.execute("UPDATE videos SET deleted_at = now(), updated_at = now() WHERE id = $1", video_id)


async def cancel_open_parts(conn: Conn, video_id: str) -> None:
    await conn.execute(
        """UPDATE renditions SET status = 'canceled', updated_at = now()
           WHERE video_id = $1 AND status IN ('queued', 'processing')""",
        video_id,
    )
    await conn.execute(
        """UPDATE videos SET thumbnail_status = 'canceled'
           WHERE id = $1 AND thumbnail_status IN ('queued', 'processing')""",
        video_id,
    )


# -- events and outbox --------------------------------------------------------------------------


async def terminal_event_after(conn: Conn, video_id: str, after: int, types: list[str]) -> bool:
    """Whether the video has an event of one of ``types`` after sequence ``after``."""
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM video_events
                              WHERE video_id = $1 AND sequence > $2 AND type = ANY($3::text[]))""",
            video_id,
            after,
            types,
        )
    )


async def last_event_sequence(conn: Conn, video_id: str) -> int:
    """The sequence of the video's newest event (0 before its first)."""
    value = await conn.fetchval("SELECT last_sequence FROM videos WHERE id = $1", video_id)
    return int(value or 0)


async def next_sequence(conn: Conn, video_id: str) -> int:
    value = await conn.fetchval(
        "UPDATE videos SET last_sequence = last_sequence + 1 WHERE id = $1 RETURNING last_sequence",
        video_id,
    )
    return int(value)


async def insert_event(
    conn: Conn,
    *,
    event_id: str,
    video_id: str,
    sequence: int,
    type_: str,
    occurred_at: datetime,
    body: dict[str, Any],
) -> None:
    await conn.execute(
        """INSERT INTO video_events (id, video_id, sequence, type, occurred_at, body)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        event_id,
        video_id,
        sequence,
        type_,
        occurred_at,
        body,
    )


async def events_after(
    conn: Conn, video_id: str, after: int, before: int | None = None
) -> list[asyncpg.Record]:
    if before is None:
        return list(
            await conn.fetch(
                """SELECT sequence, type, body FROM video_events
                   WHERE video_id = $1 AND sequence > $2 ORDER BY sequence""",
                video_id,
                after,
            )
        )
    return list(
        await conn.fetch(
            """SELECT sequence, type, body FROM video_events
               WHERE video_id = $1 AND sequence > $2 AND sequence < $3 ORDER BY sequence""",
            video_id,
            after,
            before,
        )
    )


async def insert_outbox(
    conn: Conn,
    *,
    exchange: str,
    routing_key: str,
    message_id: str,
    type_: str,
    correlation_id: str | None,
    body: bytes,
    headers: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO outbox (exchange, routing_key, message_id, type, correlation_id, headers, body)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        exchange,
        routing_key,
        message_id,
        type_,
        correlation_id,
        headers or {},
        body,
    )


async def claim_outbox(conn: Conn, limit: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT * FROM outbox WHERE published_at IS NULL
               ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
    )


async def mark_outbox_published(conn: Conn, ids: Sequence[int]) -> None:
    await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", list(ids))


async def mark_outbox_failed(conn: Conn, ids: Sequence[int], error: str) -> None:
    await conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1::bigint[])",
        list(ids),
        error[:2000],
    )


async def outbox_backlog(conn: Conn) -> tuple[int, float]:
    """Rows not yet published (every gateway's), and the oldest one's age in seconds (0: none)."""
    row = await conn.fetchrow(
        """SELECT count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS oldest
           FROM outbox WHERE published_at IS NULL"""
    )
    assert row is not None  # noqa: S101 - an aggregate always returns a row
    return int(row["pending"]), float(row["oldest"] or 0.0)


async def mark_report_processed(conn: Conn, report_id: str) -> bool:
    """Record a worker report as applied; ``False`` when it already was (a duplicate)."""
    status = await conn.execute(
        "INSERT INTO processed_reports (id) VALUES ($1) ON CONFLICT DO NOTHING", report_id
    )
    return status.endswith(" 1")


# -- idempotency keys ---------------------------------------------------------------------------


async def claim_idempotency_key(conn: Conn, client_id: str, key: str, ttl_s: int) -> asyncpg.Record | None:
    """Take ``key`` for a new request; returns the earlier request's row when it is taken."""
    await conn.execute(
        """DELETE FROM idempotency_keys WHERE client_id = $1 AND key = $2
           AND created_at < now() - make_interval(secs => $3)""",
        client_id,
        key,
        ttl_s,
    )
    while True:
        status = await conn.execute(
            "INSERT INTO idempotency_keys (client_id, key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            client_id,
            key,
        )
        if status.endswith(" 1"):
            return None
        row = await conn.fetchrow(
            "SELECT * FROM idempotency_keys WHERE client_id = $1 AND key = $2", client_id, key
        )
        if row is not None:
            return row
        # released (a refused request) between the two statements: take it again, or meet the
        # request that did; reading None as "taken by us" let two requests run under one key


async def store_idempotent_response(
    conn: Conn,
    client_id: str,
    key: str,
    status_code: int,
    response: dict[str, Any],
    video_id: str | None,
    fingerprint: str,
) -> None:
    await conn.execute(
        """UPDATE idempotency_keys SET status_code = $3, response = $4, video_id = $5, fingerprint = $6
           WHERE client_id = $1 AND key = $2""",
        client_id,
        key,
        status_code,
        response,
        video_id,
        fingerprint,
    )


async def release_idempotency_key(conn: Conn, client_id: str, key: str) -> None:
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE client_id = $1 AND key = $2 AND status_code IS NULL",
        client_id,
        key,
    )


# -- webhooks -----------------------------------------------------------------------------------


async def insert_webhook(
    conn: Conn, *, webhook_id: str, client_id: str, url: str, events: list[str], description: str, secret: str
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """INSERT INTO webhooks (id, client_id, url, events, description, secret)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        webhook_id,
        client_id,
        url,
        events,
        description,
        secret,
    )
    assert row is not None  # noqa: S101 - INSERT … RETURNING always returns the row
    return row


_KEY_LOCK = 0x6B657973  # "keys": one gateway at a time makes the first key of a purpose


async def signing_keys(conn: Conn, purpose: str, *, made_if_none: bool = True) -> list[asyncpg.Record]:
    """The purpose's keys not revoked, newest first (``secret``, ``created_at``).

    The first one is made now (32 random bytes) if there is none yet.
    """
    sql = """SELECT secret, created_at FROM signing_keys
             WHERE purpose = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id DESC"""
    rows = list(await conn.fetch(sql, purpose))
    if rows or not made_if_none:
        return rows
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _KEY_LOCK)
        if not await conn.fetchval(
            "SELECT 1 FROM signing_keys WHERE purpose = $1 AND revoked_at IS NULL", purpose
        ):
            await add_signing_key(conn, purpose)
    return list(await conn.fetch(sql, purpose))


async def add_signing_key(conn: Conn, purpose: str, *, revoke_others: bool = False) -> None:
    """A new key for ``purpose``, the one signed with from now on; the others revoked if asked."""
    async with conn.transaction():
        if revoke_others:
            await conn.execute(
                "UPDATE signing_keys SET revoked_at = now() WHERE purpose = $1 AND revoked_at IS NULL",
                purpose,
            )
        await conn.execute(
            "INSERT INTO signing_keys (purpose, secret) VALUES ($1, $2)", purpose, secrets.token_bytes(32)
        )


async def count_webhooks_locking_client(conn: Conn, client_id: str) -> int:
    """The client's endpoints, its ``clients`` row locked until the transaction ends."""
    await conn.execute("SELECT 1 FROM clients WHERE id = $1 FOR NO KEY UPDATE", client_id)
    count: int = await conn.fetchval(
        "SELECT count(*) FROM webhooks WHERE client_id = $1 AND deleted_at IS NULL", client_id
    )
    return count


async def webhook_rows(conn: Conn, client_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT * FROM webhooks WHERE client_id = $1 AND deleted_at IS NULL
               ORDER BY created_at DESC, id DESC""",
            client_id,
        )
    )


async def webhook_row(
    conn: Conn, webhook_id: str, client_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    """The client's subscription; ``lock`` holds the row until the transaction ends."""
    return await conn.fetchrow(
        "SELECT * FROM webhooks WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL"  # noqa: S608 - constants
        + (" FOR NO KEY UPDATE" if lock else ""),
        webhook_id,
        client_id,
    )


async def update_webhook(conn: Conn, webhook_id: str, **fields: Any) -> asyncpg.Record | None:
    names = list(fields)
    assignments = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    return await conn.fetchrow(
        f"UPDATE webhooks SET {assignments}, updated_at = now() "  # noqa: S608 - names are ours
        "WHERE id = $1 AND deleted_at IS NULL RETURNING *",
        webhook_id,
        *fields.values(),
    )


async def disable_webhook(conn: Conn, webhook_id: str, reason: str) -> None:
    await conn.execute(
        """UPDATE webhooks SET enabled = false, disabled_reason = $2, updated_at = now()
           WHERE id = $1 AND enabled""",
        webhook_id,
        reason,
    )


async def delete_webhook(conn: Conn, webhook_id: str, client_id: str) -> bool:
    """Whether the client's subscription was there to delete (not deleted already)."""
    status = await conn.execute(
        """UPDATE webhooks SET deleted_at = now(), enabled = false, updated_at = now()
           WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL""",
        webhook_id,
        client_id,
    )
    return bool(status.endswith(" 1"))


# -- direct uploads -------------------------------------------------------------------------------


async def insert_direct_upload(
    conn: Conn,
    *,
    upload_id: str,
    client_id: str,
    fields: dict[str, str],
    cors_origin: str | None,
    timeout_s: int,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """INSERT INTO direct_uploads (id, client_id, fields, cors_origin, expires_at)
           VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
           RETURNING *, expires_at <= now() AS expired""",
        upload_id,
        client_id,
        fields,
        cors_origin,
        float(timeout_s),
    )
    assert row is not None  # noqa: S101 - INSERT … RETURNING always returns the row
    return row


async def direct_upload_row(
    conn: Conn, upload_id: str, client_id: str | None = None
) -> asyncpg.Record | None:
    """The upload (the client's only, when given), with ``expired`` as the database's clock says."""
    sql = "SELECT *, expires_at <= now() AS expired FROM direct_uploads WHERE id = $1"
    if client_id is None:
        return await conn.fetchrow(sql, upload_id)
    return await conn.fetchrow(sql + " AND client_id = $2", upload_id, client_id)


async def direct_upload_rows(conn: Conn, client_id: str, limit: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT *, expires_at <= now() AS expired FROM direct_uploads WHERE client_id = $1
               ORDER BY created_at DESC, id DESC LIMIT $2""",
            client_id,
            limit,
        )
    )


async def settle_direct_upload(conn: Conn, upload_id: str, status: str, video_id: str | None = None) -> bool:
    """Move a waiting upload to ``status``; ``False`` when it was not waiting any more."""
    done = await conn.execute(
        """UPDATE direct_uploads SET status = $2, video_id = $3
           WHERE id = $1 AND status = 'waiting' AND expires_at > now()""",
        upload_id,
        status,
        video_id,
    )
    return bool(done.endswith(" 1"))


# -- resumable (tus) uploads ----------------------------------------------------------------------

#: A resumable upload, with ``expired`` by the database's clock and the CORS origin of the direct
#: upload it was made through, if any.
_RESUMABLE = """SELECT r.*, r.expires_at <= now() AS expired, d.cors_origin, d.status AS direct_status
                  FROM resumable_uploads r LEFT JOIN direct_uploads d ON d.id = r.direct_upload_id"""


async def count_open_resumable_uploads(conn: Conn, client_id: str) -> int:
    count = await conn.fetchval(
        """SELECT count(*) FROM resumable_uploads
           WHERE client_id = $1 AND status = 'receiving' AND expires_at > now()""",
        client_id,
    )
    return int(count)


async def insert_resumable_upload(
    conn: Conn,
    *,
    upload_id: str,
    client_id: str,
    video_id: str,
    length: int,
    filename: str,
    fields: dict[str, str],
    upload_metadata: str,
    expiry_s: float,
    direct_upload_id: str | None = None,
) -> asyncpg.Record:
    """A new upload; made through a direct upload, it expires with that upload's URL at the latest."""
    row = await conn.fetchrow(
        """INSERT INTO resumable_uploads (id, client_id, video_id, length, filename, fields,
                                          upload_metadata, expires_at, direct_upload_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7,
                   least(now() + make_interval(secs => $8),
                         coalesce((SELECT expires_at FROM direct_uploads WHERE id = $9), 'infinity')),
                   $9)
           RETURNING *, false AS expired""",
        upload_id,
        client_id,
        video_id,
        length,
        filename,
        fields,
        upload_metadata,
        expiry_s,
        direct_upload_id,
    )
    assert row is not None  # noqa: S101 - INSERT … RETURNING always returns the row
    return row


async def resumable_upload_row(
    conn: Conn, upload_id: str, client_id: str | None = None
) -> asyncpg.Record | None:
    """The upload (the client's only, when given)."""
    if client_id is None:
        return await conn.fetchrow(_RESUMABLE + " WHERE r.id = $1", upload_id)
    return await conn.fetchrow(_RESUMABLE + " WHERE r.id = $1 AND r.client_id = $2", upload_id, client_id)


async def take_resumable_upload(
    conn: Conn, upload_id: str, offset: int, writer: str, lease_s: float
) -> asyncpg.Record | None:
    """Hold the upload for one PATCH at ``offset``; ``None`` if it is not there, or held by another."""
    return await conn.fetchrow(
        """UPDATE resumable_uploads
              SET writer = $3, writer_until = now() + make_interval(secs => $4), updated_at = now()
            WHERE id = $1 AND received = $2 AND status = 'receiving' AND expires_at > now()
              AND (writer IS NULL OR writer_until < now())
        RETURNING *, false AS expired""",
        upload_id,
        offset,
        writer,
        lease_s,
    )


def _pushed_back(when: str = "") -> str:
    """An upload's expiry, pushed back to ``$4`` seconds from now when ``when`` also holds.

    Not for one made through a direct upload: its signed ``Location`` carries its expiry.
    """
    return f"""CASE WHEN $4::float8 IS NOT NULL AND direct_upload_id IS NULL {when}
                    THEN greatest(expires_at, now() + make_interval(secs => $4))
                    ELSE expires_at END"""


async def renew_resumable_upload(
    conn: Conn, upload_id: str, writer: str, lease_s: float, *, extend_s: float | None = None
) -> bool:
    """Extend the writer's lease; ``False`` if it lost the upload (expired, ended, taken over).

    With ``extend_s``, the bytes coming push the expiry back as :func:`release_resumable_upload`
    does, so one long PATCH is not cut off by the expiry it started near: while the request
    holds its lease, an expiry that passed since it took the upload does not end it.
    """
    done = await conn.execute(
        f"""UPDATE resumable_uploads SET writer_until = now() + make_interval(secs => $3),
                   expires_at = {_pushed_back()}
             WHERE id = $1 AND writer = $2 AND status = 'receiving'
               AND (expires_at > now() OR writer_until > now())""",  # noqa: S608 - ours
        upload_id,
        writer,
        lease_s,
        extend_s,
    )
    return bool(done.endswith(" 1"))


async def release_resumable_upload(
    conn: Conn, upload_id: str, writer: str, received: int, *, extend_s: float | None = None
) -> datetime | None:
    """Record how far the file is on disk and let the next PATCH in; the upload's expiry then.

    ``None`` if this request is no longer the writer. With ``extend_s``, bytes that arrived
    push the expiry to at least that far from now, so an upload expires after it goes quiet,
    not while it is sent — except one made through a direct upload, whose signed ``Location``
    carries its expiry.
    """
    expires: datetime | None = await conn.fetchval(
        f"""UPDATE resumable_uploads SET received = $3, writer = NULL, writer_until = NULL,
                   updated_at = now(), expires_at = {_pushed_back("AND $3 > received")}
             WHERE id = $1 AND writer = $2 AND status = 'receiving'
         RETURNING expires_at""",  # noqa: S608 - ours
        upload_id,
        writer,
        received,
        extend_s,
    )
    return expires


async def end_resumable_upload(
    conn: Conn, upload_id: str, status: str, *, writer: str | None = None, error: str | None = None
) -> bool:
    """Move a receiving upload to ``status`` (``writer``: only while that request holds it)."""
    done = await conn.execute(
        """UPDATE resumable_uploads
              SET status = $2, error = $3, received = CASE WHEN $2 = 'complete' THEN length
                                                            ELSE received END,
                  writer = NULL, writer_until = NULL, updated_at = now()
            WHERE id = $1 AND status = 'receiving' AND ($4::text IS NULL OR writer = $4)""",
        upload_id,
        status,
        error,
        writer,
    )
    return bool(done.endswith(" 1"))


async def end_resumable_uploads_of(conn: Conn, direct_upload_id: str) -> list[str]:
    """End the receiving uploads made through a direct upload (its URL makes one video); their ids."""
    rows = await conn.fetch(
        """UPDATE resumable_uploads SET status = 'terminated', writer = NULL, writer_until = NULL,
                  updated_at = now()
            WHERE direct_upload_id = $1 AND status = 'receiving'
        RETURNING id""",
        direct_upload_id,
    )
    return [row["id"] for row in rows]


async def expire_resumable_uploads(conn: Conn, limit: int = 500) -> list[str]:
    """Mark receiving uploads past their expiry as expired; their ids (their files are to go)."""
    rows = await conn.fetch(
        """UPDATE resumable_uploads SET status = 'expired', writer = NULL, writer_until = NULL,
                  updated_at = now()
            WHERE id IN (SELECT id FROM resumable_uploads
                          WHERE status = 'receiving' AND expires_at <= now()
                            AND (writer IS NULL OR writer_until < now())  -- not while it is sent
                          LIMIT $1)
        RETURNING id""",
        limit,
    )
    return [row["id"] for row in rows]
