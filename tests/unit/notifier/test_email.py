"""The emails of ``video.ready`` / ``video.failed``, and how the SMTP sender reads its URL."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest

from notifier.email import Email, SmtpEmailSender, render
from shared.errors import PermanentError, TransientError
from shared.events import VideoFailed, VideoReady
from shared.ids import event_id
from shared.resources import Thumbnail
from tests.unit import factories


def ready_event(filename: str = "holiday.mp4") -> VideoReady:
    video = factories.video(status="ready", source=factories.source(filename=filename))
    base = f"https://vidq.example.com/v1/videos/{video.id}"
    video = video.model_copy(
        update={
            "renditions": [
                factories.rendition(
                    video.id, q, width=w, height=h, size_bytes=5_242_880, url=f"{base}/renditions/{q}"
                )
                for q, w, h in [("720p", 1280, 720), ("360p", 640, 360), ("144p", 256, 144)]
            ],
            "thumbnail": Thumbnail(status="ready", urls=[f"{base}/thumbnail?width=640"], widths=[640]),
        }
    )
    return VideoReady(id=event_id(video.id, "ready"), timestamp=datetime.now(UTC), sequence=9, data=video)


def failed_event() -> VideoFailed:
    video = factories.video(status="failed", error="rendition 720p failed: ffmpeg exited with status 1")
    video = video.model_copy(
        update={
            "renditions": [
                factories.rendition(video.id, "720p", status="failed", error="ffmpeg exited with status 1"),
                factories.rendition(video.id, "360p", status="ready"),
            ]
        }
    )
    return VideoFailed(id=event_id(video.id, "failed"), timestamp=datetime.now(UTC), sequence=5, data=video)


def test_the_ready_email_names_the_file_and_links_every_rendition() -> None:
    event = ready_event()

    email = render(event, "ana@example.com")

    assert email.to == "ana@example.com"
    assert email.subject == "Your video holiday.mp4 is ready"
    for body in (email.text, email.html):
        assert "holiday.mp4" in body
        for rendition in event.data.renditions:
            assert rendition.url is not None
            assert rendition.url in body
        assert event.data.thumbnail.urls[0] in body
    assert "1280x720" in email.text
    assert "5.0 MB" in email.text


def test_with_signed_links_the_ready_email_links_them_and_says_until_when() -> None:
    event = ready_event()
    video = event.data
    expires = int(datetime(2026, 12, 5, 11, tzinfo=UTC).timestamp())
    signed = video.model_copy(
        update={
            "renditions": [
                r.model_copy(update={"signed_url": f"{r.url}?expires={expires}&signature=s-{r.quality}"})
                for r in video.renditions
            ],
            "thumbnail": video.thumbnail.model_copy(
                update={"signed_urls": [f"{video.thumbnail.urls[0]}&expires={expires + 3600}&signature=t"]}
            ),
        }
    )

    email = render(event.model_copy(update={"data": signed}), "ana@example.com")

    for body in (email.text, email.html.replace("&amp;", "&")):
        for rendition in signed.renditions:
            assert rendition.signed_url is not None
            assert rendition.signed_url in body  # opens without an API key
        assert signed.thumbnail.signed_urls[0] in body
        assert "until 2026-12-05 11:00 UTC" in body  # the first of them to expire
        assert "need your API key" not in body


def test_the_failed_email_names_the_file_and_says_why() -> None:
    event = failed_event()

    email = render(event, "ana@example.com")

    assert email.subject == "Your video holiday.mp4 could not be processed"
    for body in (email.text, email.html):
        assert "holiday.mp4" in body
        assert "rendition 720p failed: ffmpeg exited with status 1" in body
        assert "720p: failed" in body
        assert event.data.id in body


def test_the_html_escapes_what_the_client_chose() -> None:
    email = render(ready_event('<script>alert("x")</script>.mp4'), "ana@example.com")

    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html
    assert '<script>alert("x")</script>.mp4' in email.text


def test_the_message_id_is_the_same_for_the_same_event_and_recipient() -> None:
    event = ready_event()

    first, again = render(event, "ana@example.com"), render(event, "ana@example.com")
    other = render(event, "bo@example.com")

    assert first.message_id == again.message_id
    assert first.message_id != other.message_id
    assert first.message_id.startswith(f"<{event.id}.")
    assert first.message_id.endswith("@vidq>")
    assert render(ready_event(), "ana@example.com").message_id != first.message_id


@pytest.mark.parametrize(
    ("url", "host", "port", "use_tls", "start_tls", "username", "password"),
    [
        ("smtp://127.0.0.1:1025", "127.0.0.1", 1025, False, False, None, None),
        ("smtp://mail.example.com", "mail.example.com", 25, False, False, None, None),
        ("smtps://mail.example.com", "mail.example.com", 465, True, False, None, None),
        ("smtps://mail.example.com:2465", "mail.example.com", 2465, True, False, None, None),
        ("smtp://mail.example.com:587?starttls=true", "mail.example.com", 587, False, True, None, None),
        ("smtp://mail.example.com:587?starttls=1", "mail.example.com", 587, False, True, None, None),
        ("smtp://mail.example.com:587?starttls=false", "mail.example.com", 587, False, False, None, None),
        ("smtp://vidq:s3cret@mail.example.com:587", "mail.example.com", 587, False, False, "vidq", "s3cret"),
        (
            "smtp://ops%40example.com:p%40ss%3Aword@mx:25",
            "mx",
            25,
            False,
            False,
            "ops@example.com",
            "p@ss:word",
        ),
    ],
)
def test_the_smtp_url_gives_host_port_tls_and_credentials(
    url: str, host: str, port: int, use_tls: bool, start_tls: bool, username: str | None, password: str | None
) -> None:
    sender = SmtpEmailSender(url, "vidq <vidq@example.com>")

    assert (sender.hostname, sender.port) == (host, port)
    assert (sender.use_tls, sender.start_tls) == (use_tls, start_tls)
    assert (sender.username, sender.password) == (username, password)


EMAIL = Email(
    to="ana@example.com", subject="Hi", text="plain words", html="<p>html words</p>", message_id="<m1@vidq>"
)


async def test_send_hands_a_text_and_html_message_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[EmailMessage, dict[str, Any]]] = []

    async def fake_send(message: EmailMessage, **options: Any) -> None:
        sent.append((message, options))

    monkeypatch.setattr(aiosmtplib, "send", fake_send)

    await SmtpEmailSender("smtp://u:p@mx:2525?starttls=true", "vidq <vidq@example.com>").send(EMAIL)

    [(message, options)] = sent
    assert message["To"] == "ana@example.com"
    assert message["From"] == "vidq <vidq@example.com>"
    assert message["Subject"] == "Hi"
    assert message["Message-ID"] == "<m1@vidq>"
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert isinstance(text_part, EmailMessage)
    assert isinstance(html_part, EmailMessage)
    assert text_part.get_content().strip() == "plain words"
    assert html_part.get_content().strip() == "<p>html words</p>"
    assert (options["hostname"], options["port"], options["username"], options["password"]) == (
        "mx",
        2525,
        "u",
        "p",
    )
    assert options["start_tls"] is True


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (aiosmtplib.SMTPRecipientsRefused([]), PermanentError),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(451, "later", "a@example.com")]
            ),
            TransientError,
        ),
        (aiosmtplib.SMTPResponseException(550, "no such user"), PermanentError),
        (aiosmtplib.SMTPResponseException(451, "try again later"), TransientError),
        (aiosmtplib.SMTPConnectError("refused"), TransientError),
        (ConnectionRefusedError(), TransientError),
        (TimeoutError(), TransientError),
    ],
    ids=["recipients-refused", "recipient-deferred", "5xx", "4xx", "connect", "os-error", "timeout"],
)
async def test_smtp_failures_become_permanent_or_transient(
    monkeypatch: pytest.MonkeyPatch, error: Exception, expected: type[Exception]
) -> None:
    async def failing_send(message: EmailMessage, **options: Any) -> None:
        raise error

    monkeypatch.setattr(aiosmtplib, "send", failing_send)

    with pytest.raises(expected):
        await SmtpEmailSender("smtp://mx:25", "vidq@example.com").send(EMAIL)
