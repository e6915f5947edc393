"""``vidq webhooks …``: subscriptions, their delivery log, replays and test events."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.text import Text

from vidq import views
from vidq.client import Json, VidqClient
from vidq.errors import UsageProblem, VidqError
from vidq.options import JsonOutput
from vidq.session import session

app = typer.Typer(
    help="Webhook subscriptions: add, list, rotate, remove, delivery log, replay, test.", no_args_is_help=True
)

WebhookId = Annotated[str, typer.Argument(metavar="WEBHOOK_ID", help="The webhook (whk_…).")]
_AGE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HTTP_OK = range(200, 300)
_POLL_S = 0.25


def moment(text: str, *, now: datetime | None = None) -> str:
    """An RFC 3339 time from ``2025-01-02T03:04:05Z``, ``2025-01-02`` or an age (``30m``, ``2h``, ``7d``)."""
    age = _AGE.match(text.strip())
    if age:
        ago = timedelta(seconds=int(age.group(1)) * _UNITS[age.group(2)])
        return ((now or datetime.now(UTC)) - ago).isoformat()
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageProblem(
            f"not a time: {text!r} (use RFC 3339, a date, or an age like 30m, 2h, 7d)"
        ) from None
    return (parsed if parsed.tzinfo else parsed.astimezone()).isoformat()


@app.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="Where to POST the events (http or https).")],
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--event", "-e", help='An event pattern, e.g. "video.*" (repeat it; default: every event).'
        ),
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="A note for you.")] = "",
    as_json: JsonOutput = False,
) -> None:
    """Subscribe a URL to events; prints its signing secret, which is shown only this once."""
    s = session(ctx)
    with s.client() as api:
        hook = api.create_webhook(url, events or ["*"], description)
    if as_json:
        views.emit_json(hook)
        return
    s.out.print(f"{hook['id']}  {hook['url']}  {','.join(hook.get('events') or [])}")
    s.out.print(f"secret {hook['secret']}  (verify signatures with it; it is not shown again)")


@app.command("ls")
def list_webhooks(ctx: typer.Context, as_json: JsonOutput = False) -> None:
    """List your webhook subscriptions."""
    s = session(ctx)
    with s.client() as api:
        page = api.webhooks()
    if as_json:
        views.emit_json(page)
    elif page.get("data"):
        s.out.print(views.webhooks_table(page["data"]))
    else:
        s.err.print("no webhooks")


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    webhook_id: WebhookId,
    grace: Annotated[
        str,
        typer.Option(
            help="How long the secrets in use until now keep signing beside the new one: "
            "an age like 30m, 2h, 1d (at most 7d), or 0 to stop them at once (a leaked secret).",
        ),
    ] = "1d",
    as_json: JsonOutput = False,
) -> None:
    """A new signing secret for an endpoint; prints it, shown only this once."""
    s = session(ctx)
    seconds = _seconds(grace)
    with s.client() as api:
        hook = api.rotate_secret(webhook_id, grace_s=seconds)
    if as_json:
        views.emit_json(hook)
        return
    s.out.print(f"secret {hook['secret']}  (verify signatures with it; it is not shown again)")
    until = hook.get("previous_secrets_sign_until") or []
    if until:
        s.out.print(f"the {len(until)} earlier secret(s) also sign until {', '.join(map(str, until))}")
    else:
        s.out.print("no earlier secret signs any more")


def _seconds(text: str) -> int:
    if text.strip() == "0":
        return 0
    age = _AGE.match(text.strip())
    if not age:
        raise UsageProblem(f"not a duration: {text!r} (use 0 or an age like 30m, 2h, 1d)")
    return int(age.group(1)) * _UNITS[age.group(2)]


@app.command("rm")
def remove(ctx: typer.Context, webhook_id: WebhookId) -> None:
    """Remove a subscription (deliveries in flight stop)."""
    s = session(ctx)
    with s.client() as api:
        api.delete_webhook(webhook_id)
    s.out.print(f"deleted {webhook_id}")


@app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    webhook_id: WebhookId,
    status: Annotated[str | None, typer.Option(help="Only pending, succeeded or failed ones.")] = None,
    video: Annotated[str | None, typer.Option(help="Only deliveries of this video's events.")] = None,
    event: Annotated[str | None, typer.Option(help="Only the delivery of this event (evt_…).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="At most this many, newest first.")] = 20,
    as_json: JsonOutput = False,
) -> None:
    """Show the delivery log of a webhook: each event sent, its attempts and outcome."""
    s = session(ctx)
    with s.client() as api:
        page = api.deliveries(webhook_id, status=status, video_id=video, event_id=event, limit=limit)
    if as_json:
        views.emit_json(page)
    elif page.get("data"):
        s.out.print(views.deliveries_table(page["data"]))
    else:
        s.err.print("no deliveries")


@app.command("delivery")
def delivery(
    ctx: typer.Context,
    webhook_id: WebhookId,
    delivery_id: Annotated[str, typer.Argument(metavar="DELIVERY_ID", help="The delivery (dlv_…).")],
    as_json: JsonOutput = False,
) -> None:
    """Show one delivery: its attempts, and the body the endpoint received."""
    s = session(ctx)
    with s.client() as api:
        one = api.delivery(webhook_id, delivery_id)
    if as_json:
        views.emit_json(one)
        return
    s.out.print(views.deliveries_table([one]))
    s.out.print_json(json.dumps(one.get("payload")))


@app.command("replay")
def replay(
    ctx: typer.Context,
    webhook_id: WebhookId,
    since: Annotated[
        str | None, typer.Option(help="Re-send events since then: RFC 3339, or an age (2h).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="… and before then (default: now).")] = None,
    failed_only: Annotated[bool, typer.Option(help="Only events whose delivery failed for good.")] = False,
    delivery: Annotated[
        str | None, typer.Option(help="Instead, send this one delivery (dlv_…) again now.")
    ] = None,
) -> None:
    """Send a webhook's past events again: all since a time, or one delivery."""
    s = session(ctx)
    if delivery is not None and since is None:
        with s.client() as api:
            api.retry_delivery(webhook_id, delivery)
        s.out.print(f"delivery {delivery} queued again")
    elif since is not None and delivery is None:
        start, end = moment(since), moment(until) if until else None
        with s.client() as api:
            api.replay(webhook_id, since=start, until=end, failed_only=failed_only)
        s.out.print(f"events since {start} queued again; see vidq webhooks deliveries {webhook_id}")
    else:
        raise UsageProblem("say what to replay: --since WHEN, or --delivery DELIVERY_ID")


def _attempted(
    api: VidqClient, webhook_id: str, event_id: str, timeout: float, pause: Callable[[float], None]
) -> Json:
    """The test event's delivery once it was attempted (or settled), polled for ``timeout`` s."""
    for _ in range(max(1, math.ceil(timeout / _POLL_S))):
        rows = api.deliveries(webhook_id, event_id=event_id, limit=1).get("data") or []
        if rows and (rows[0].get("attempt_log") or rows[0].get("status") != "pending"):
            return dict(rows[0])
        pause(_POLL_S)
    raise VidqError(f"webhook test failed: no attempt within {timeout:g} s (is the notifier running?)")


@app.command("test")
def send_test(
    ctx: typer.Context,
    webhook_id: WebhookId,
    wait: Annotated[
        bool, typer.Option(help="Wait for the first attempt and fail (exit 1) unless it got a 2xx.")
    ] = True,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for that attempt.")] = 30.0,
    as_json: JsonOutput = False,
) -> None:
    """Send a webhook.test event to the endpoint and report how it answered."""
    s = session(ctx)
    with s.client() as api:
        sent = api.test_webhook(webhook_id)
        if not wait:
            if as_json:
                views.emit_json(sent)
            else:
                s.out.print(f"test event {sent['event_id']} queued (delivery {sent['delivery_id']})")
            return
        row = _attempted(api, webhook_id, str(sent["event_id"]), timeout, s.pause)
    last = (row.get("attempt_log") or [{}])[-1]
    code = last.get("status_code") or row.get("last_status_code")
    ok = isinstance(code, int) and code in _HTTP_OK
    if as_json:
        views.emit_json(row)
    elif ok:
        took = f"{code} in {last.get('latency_ms', '?')} ms"
        s.out.print(Text.assemble(("delivered", "green"), f": {row.get('event_id')} answered {took}"))
    if not ok:
        error = last.get("error") or row.get("last_error")
        reason = f"the endpoint answered {code}" if code else error or "no answer"
        raise VidqError(f"webhook test failed: {reason} (delivery {row.get('id')})")
