"""``SmtpEmailSender`` against a real SMTP server (aiosmtpd in a thread): plain, AUTH, TLS, failures."""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from notifier.email import SmtpEmailSender, render, render_endpoint_disabled
from shared.errors import PermanentError, TransientError
from shared.events import VideoReady
from shared.ids import event_id
from shared.resources import Thumbnail
from tests.realdeps import free_port
from tests.unit import factories

# AUTH over plain SMTP is what these tests want (a development mail catcher); aiosmtpd warns.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

SENDER = "vidq <vidq@localhost>"
TO = "ana@example.com"
USER, PASSWORD = "vidq", "s3cret:/@"  # characters that must be percent-encoded in the URL
PASSWORD_IN_URL = "s3cret%3A%2F%40"


@dataclass
class Inbox:
    """aiosmtpd handler keeping every message, and whether it came over TLS.

    ``rcpt_answer`` / ``data_answer``, when set, are said instead of accepting.
    """

    rcpt_answer: str | None = None
    data_answer: str | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str | None, list[str]]] = field(default_factory=list)
    over_tls: list[bool] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_answer:
            return self.rcpt_answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if self.data_answer:
            return self.data_answer
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            assert server.transport is not None
            self.over_tls.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 OK"


@contextmanager
def smtp_server(handler: Inbox, **options: Any) -> Iterator[int]:
    """Run aiosmtpd on a free port of 127.0.0.1 with ``options``; yields the port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def one_user(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    """aiosmtpd ``authenticator``: accepts exactly ``USER`` / ``PASSWORD``."""
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for CN=localhost, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def ready_event() -> VideoReady:
    video = factories.video(status="ready", source=factories.source(filename="holiday.mp4"))
    base = f"https://vidq.example.com/v1/videos/{video.id}"
    video = video.model_copy(
        update={
            "renditions": [
                factories.rendition(video.id, q, width=w, height=h, url=f"{base}/renditions/{q}")
                for q, w, h in [("720p", 1280, 720), ("360p", 640, 360)]
            ],
            "thumbnail": Thumbnail(status="ready", urls=[f"{base}/thumbnail?width=640"], widths=[640]),
        }
    )
    return VideoReady(id=event_id(video.id, "ready"), timestamp=datetime.now(UTC), sequence=7, data=video)


def bodies(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


async def test_a_ready_email_arrives_with_headers_and_both_parts() -> None:
    inbox = Inbox()
    event = ready_event()
    mail = render(event, TO)
    with smtp_server(inbox) as port:
        await SmtpEmailSender(f"smtp://127.0.0.1:{port}", SENDER, timeout=5).send(mail)

    [message] = inbox.messages
    assert inbox.envelopes == [("vidq@localhost", [TO])]
    assert inbox.over_tls == [False]
    assert message["From"] == SENDER
    assert message["To"] == TO
    assert message["Subject"] == "Your video holiday.mp4 is ready"
    assert message["Message-ID"] == mail.message_id
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    text, html = bodies(message)
    for rendition in event.data.renditions:
        assert rendition.url is not None
        assert rendition.url in text
        assert f'href="{rendition.url}"' in html
    assert "holiday.mp4" in text


async def test_the_right_credentials_deliver() -> None:
    inbox = Inbox()
    with smtp_server(inbox, auth_required=True, auth_require_tls=False, authenticator=one_user) as port:
        sender = SmtpEmailSender(f"smtp://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{port}", SENDER, timeout=5)
        await sender.send(render(ready_event(), TO))

    assert len(inbox.messages) == 1


async def test_a_wrong_password_is_permanent_and_delivers_nothing() -> None:
    inbox = Inbox()
    with smtp_server(inbox, auth_required=True, auth_require_tls=False, authenticator=one_user) as port:
        sender = SmtpEmailSender(f"smtp://{USER}:wrong@127.0.0.1:{port}", SENDER, timeout=5)
        with pytest.raises(PermanentError, match="535"):
            await sender.send(render(ready_event(), TO))

    assert inbox.messages == []


async def test_no_credentials_to_a_server_requiring_them_is_permanent() -> None:
    inbox = Inbox()
    with smtp_server(inbox, auth_required=True, auth_require_tls=False, authenticator=one_user) as port:
        sender = SmtpEmailSender(f"smtp://127.0.0.1:{port}", SENDER, timeout=5)
        with pytest.raises(PermanentError, match="530"):
            await sender.send(render(ready_event(), TO))

    assert inbox.messages == []


async def test_starttls_with_verify_off_delivers_encrypted(server_tls: ssl.SSLContext) -> None:
    inbox = Inbox()
    with smtp_server(inbox, tls_context=server_tls, require_starttls=True) as port:
        sender = SmtpEmailSender(f"smtp://127.0.0.1:{port}?starttls=true&verify=false", SENDER, timeout=5)
        await sender.send(render(ready_event(), TO))

    assert len(inbox.messages) == 1
    assert inbox.over_tls == [True]


async def test_starttls_and_auth_together(server_tls: ssl.SSLContext) -> None:
    inbox = Inbox()
    options = {"tls_context": server_tls, "require_starttls": True, "auth_required": True}
    with smtp_server(inbox, authenticator=one_user, **options) as port:
        url = f"smtp://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{port}?starttls=true&verify=false"
        await SmtpEmailSender(url, SENDER, timeout=5).send(render(ready_event(), TO))

    assert inbox.over_tls == [True]


async def test_a_plain_url_still_upgrades_when_the_server_offers_starttls(server_tls: ssl.SSLContext) -> None:
    # ``start_tls=None`` in aiosmtplib: opportunistic; so verify=false matters without ?starttls too.
    inbox = Inbox()
    with smtp_server(inbox, tls_context=server_tls) as port:
        await SmtpEmailSender(f"smtp://127.0.0.1:{port}?verify=false", SENDER, timeout=5).send(
            render(ready_event(), TO)
        )

    assert inbox.over_tls == [True]


async def test_starttls_refuses_a_self_signed_certificate_by_default(server_tls: ssl.SSLContext) -> None:
    inbox = Inbox()
    with smtp_server(inbox, tls_context=server_tls, require_starttls=True) as port:
        sender = SmtpEmailSender(f"smtp://127.0.0.1:{port}?starttls=true", SENDER, timeout=5)
        with pytest.raises(TransientError, match=r"certificate verify failed: self.signed certificate"):
            await sender.send(render(ready_event(), TO))

    assert inbox.messages == []


async def test_implicit_tls_with_verify_off_delivers(server_tls: ssl.SSLContext) -> None:
    inbox = Inbox()
    with smtp_server(inbox, ssl_context=server_tls) as port:
        await SmtpEmailSender(f"smtps://127.0.0.1:{port}?verify=false", SENDER, timeout=5).send(
            render(ready_event(), TO)
        )

    assert len(inbox.messages) == 1
    assert inbox.over_tls == [True]


async def test_implicit_tls_refuses_a_self_signed_certificate_by_default(server_tls: ssl.SSLContext) -> None:
    inbox = Inbox()
    with smtp_server(inbox, ssl_context=server_tls) as port:
        sender = SmtpEmailSender(f"smtps://127.0.0.1:{port}", SENDER, timeout=5)
        with pytest.raises(TransientError, match=r"certificate verify failed: self.signed certificate"):
            await sender.send(render(ready_event(), TO))

    assert inbox.messages == []


@pytest.mark.parametrize(
    ("stage", "answer", "error"),
    [
        ("rcpt", "451 4.3.0 try again later", TransientError),
        ("rcpt", "550 5.1.1 no such user", PermanentError),
        ("data", "451 4.3.0 try again later", TransientError),
        ("data", "550 5.1.1 no such user", PermanentError),
    ],
    ids=["rcpt-451", "rcpt-550", "data-451", "data-550"],
)
async def test_4xx_answers_are_transient_and_5xx_permanent(
    stage: str, answer: str, error: type[Exception]
) -> None:
    inbox = Inbox(rcpt_answer=answer) if stage == "rcpt" else Inbox(data_answer=answer)
    code, _, text = answer.partition(" ")
    with smtp_server(inbox) as port, pytest.raises(error) as raised:
        await SmtpEmailSender(f"smtp://127.0.0.1:{port}", SENDER, timeout=5).send(render(ready_event(), TO))

    assert type(raised.value) is error  # not a subclass standing in for the other kind
    assert f"{code} {text}" in str(raised.value)
    assert inbox.messages == []


async def test_nothing_listening_is_transient() -> None:
    port = free_port()  # bound and released: nothing listens there now
    with pytest.raises(TransientError, match="could not reach the mail server"):
        await SmtpEmailSender(f"smtp://127.0.0.1:{port}", SENDER, timeout=5).send(render(ready_event(), TO))


async def test_the_endpoint_disabled_notice_arrives_and_says_how_to_recover() -> None:
    inbox = Inbox()
    url = "https://hooks.example.com/vidq?team=a&b=c"
    mail = render_endpoint_disabled(url, "it answered 410 Gone", TO, "ntc_123")
    with smtp_server(inbox) as port:
        await SmtpEmailSender(f"smtp://127.0.0.1:{port}", SENDER, timeout=5).send(mail)

    [message] = inbox.messages
    # The subject is too long for one line; Python folds it before the first word and reads the
    # folding white space back as part of the value.
    assert str(message["Subject"]).strip() == f"vidq stopped sending webhooks to {url}"
    assert message["To"] == TO
    assert message["Message-ID"] == mail.message_id
    assert "ntc_123" in message["Message-ID"]
    text, html = bodies(message)
    assert url in text
    assert "it answered 410 Gone" in text
    for body in (text, html):
        assert '"enabled": true' in body or "&#34;enabled&#34;: true" in body or "&quot;enabled&quot;" in body
        assert "/replay?since=" in body
    assert "https://hooks.example.com/vidq?team=a&amp;b=c" in html
