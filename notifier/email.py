"""Email: render ``video.ready`` / ``video.failed`` (text and HTML) and send it over SMTP.

SMTP failures are translated at this boundary: a 5xx answer (unknown recipient, refused) is a
``PermanentError`` and is recorded, never retried; anything else (4xx, connection refused,
timeout) is a ``TransientError`` and is retried through the email queue's delay queues.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlparse

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared.errors import PermanentError, TransientError
from shared.events import VideoFailed, VideoReady
from shared.resources import Video

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, slots=True)
class Email:
    to: str
    subject: str
    text: str
    html: str
    message_id: str


class EmailSender(Protocol):
    async def send(self, email: Email) -> None: ...


def render(event: VideoReady | VideoFailed, recipient: str) -> Email:
    """The email for ``event`` (templates in ``notifier/templates``)."""
    video = event.data
    name = video.source.filename
    ready = event.type == "video.ready"
    subject = f"Your video {name} is ready" if ready else f"Your video {name} could not be processed"
    base = "video_ready" if ready else "video_failed"
    context = {"video": video, "event": event, "links_expire": _links_expire(video)}
    digest = hashlib.sha256(recipient.encode()).hexdigest()[:12]
    return Email(
        to=recipient,
        subject=subject,
        text=_TEMPLATES.get_template(f"{base}.txt").render(context),
        html=_TEMPLATES.get_template(f"{base}.html").render(context),
        # Deterministic: a resend of the same event to the same person is recognisably the same mail.
        message_id=f"<{event.id}.{digest}@vidq>",
    )


def _links_expire(video: Video) -> str | None:
    """When the video's signed links stop working ("2026-12-12 09:00 UTC"), if it has any."""
    links = [r.signed_url for r in video.renditions if r.signed_url] + video.thumbnail.signed_urls
    expiries = [int(v[0]) for link in links if (v := parse_qs(urlparse(link).query).get("expires"))]
    if not expiries:
        return None
    return datetime.fromtimestamp(min(expiries), UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_endpoint_disabled(url: str, reason: str, recipient: str, notice_id: str) -> Email:
    """The email telling a client that vidq stopped sending to one of its endpoints."""
    context = {"url": url, "reason": reason}
    digest = hashlib.sha256(recipient.encode()).hexdigest()[:12]
    return Email(
        to=recipient,
        subject=f"vidq stopped sending webhooks to {url}",
        text=_TEMPLATES.get_template("endpoint_disabled.txt").render(context),
        html=_TEMPLATES.get_template("endpoint_disabled.html").render(context),
        message_id=f"<{notice_id}.{digest}@vidq>",
    )


class SmtpEmailSender:
    """Sends through ``VIDQ_SMTP_URL`` with aiosmtplib."""

    def __init__(self, url: str, sender: str, *, timeout: float = 30.0) -> None:
        parsed = urlparse(url)
        query = parse_qs(parsed.query)
        self.hostname = parsed.hostname or "127.0.0.1"
        self.use_tls = parsed.scheme == "smtps"
        self.port = parsed.port or (465 if self.use_tls else 25)
        self.start_tls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
        # ?verify=false accepts a self-signed certificate (a development mail catcher).
        self.verify = query.get("verify", ["true"])[0].lower() not in ("0", "false", "no")
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None
        self.sender = sender
        self.timeout = timeout

    async def send(self, email: Email) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = email.message_id
        message.set_content(email.text)
        message.add_alternative(email.html, subtype="html")
        try:
            await aiosmtplib.send(
                message,
                hostname=self.hostname,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.use_tls,
                start_tls=self.start_tls or None,
                validate_certs=self.verify,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # Raised for a 4xx answer to RCPT too ("451 try again later"): only 5xx is final.
            answers = "; ".join(f"{r.code} {r.message}" for r in exc.recipients) or str(exc)
            if all(500 <= r.code < 600 for r in exc.recipients):  # noqa: PLR2004
                raise PermanentError(f"the mail server refused {email.to}: {answers}") from exc
            raise TransientError(f"the mail server deferred {email.to}: {answers}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:  # noqa: PLR2004
                raise PermanentError(
                    f"the mail server refused the message: {exc.code} {exc.message}"
                ) from exc
            raise TransientError(f"the mail server said {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientError(f"could not reach the mail server: {exc!r}") from exc
