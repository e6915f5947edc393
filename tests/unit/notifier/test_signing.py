"""Standard Webhooks signatures, checked by the reference libraries (standardwebhooks and svix)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
import standardwebhooks.webhooks
import svix.webhooks

from notifier.signing import headers, secret_bytes, sign

BODY = json.dumps({"id": "evt_1", "type": "video.ready", "sequence": 3, "data": {"id": "vid_1"}}).encode()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def verify_standardwebhooks(secret: str, body: bytes, sent: dict[str, str]) -> None:
    standardwebhooks.webhooks.Webhook(secret).verify(body, sent)


def verify_svix(secret: str, body: bytes, sent: dict[str, str]) -> None:
    svix.webhooks.Webhook(secret).verify(body, sent)


VERIFIERS: list[Callable[[str, bytes, dict[str, str]], None]] = [verify_standardwebhooks, verify_svix]
REFUSALS: list[type[Exception]] = [
    standardwebhooks.webhooks.WebhookVerificationError,
    svix.webhooks.WebhookVerificationError,
]
both = pytest.mark.parametrize(
    ("verify", "refusal"), list(zip(VERIFIERS, REFUSALS, strict=True)), ids=["standardwebhooks", "svix"]
)


def signed(secrets_: list[str], body: bytes = BODY, **overrides: Any) -> dict[str, str]:
    sent = headers(secrets_, "evt_1", int(time.time()), body)
    sent.update(overrides)
    return sent


def test_sign_matches_the_published_svix_test_vector() -> None:
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )

    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_are_the_three_standard_webhooks_headers() -> None:
    sent = headers([new_secret()], "evt_1", 1_700_000_000, BODY)

    assert set(sent) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert sent["webhook-id"] == "evt_1"
    assert sent["webhook-timestamp"] == "1700000000"
    assert sent["webhook-signature"].startswith("v1,")


@both
def test_the_reference_libraries_verify_our_signature(
    verify: Callable[[str, bytes, dict[str, str]], None], refusal: type[Exception]
) -> None:
    secret = new_secret()

    verify(secret, BODY, signed([secret]))


@both
def test_during_rotation_each_secret_verifies_on_its_own(
    verify: Callable[[str, bytes, dict[str, str]], None], refusal: type[Exception]
) -> None:
    old, new = new_secret(), new_secret()
    sent = signed([old, new])

    assert len(sent["webhook-signature"].split(" ")) == 2
    verify(old, BODY, sent)
    verify(new, BODY, sent)
    with pytest.raises(refusal):
        verify(new_secret(), BODY, sent)


@both
@pytest.mark.parametrize(
    "tamper",
    [
        lambda body: body.replace(b'"sequence": 3', b'"sequence": 4'),
        lambda body: body + b" ",
        lambda body: body[:-1],
    ],
    ids=["changed", "appended", "truncated"],
)
def test_a_tampered_body_fails_verification(
    verify: Callable[[str, bytes, dict[str, str]], None],
    refusal: type[Exception],
    tamper: Callable[[bytes], bytes],
) -> None:
    secret = new_secret()
    sent = signed([secret])

    with pytest.raises(refusal):
        verify(secret, tamper(BODY), sent)


@both
def test_a_changed_id_or_timestamp_fails_verification(
    verify: Callable[[str, bytes, dict[str, str]], None], refusal: type[Exception]
) -> None:
    secret = new_secret()
    sent = signed([secret])

    with pytest.raises(refusal):
        verify(secret, BODY, {**sent, "webhook-id": "evt_2"})
    with pytest.raises(refusal):
        verify(secret, BODY, {**sent, "webhook-timestamp": str(int(sent["webhook-timestamp"]) - 1)})


@both
def test_the_wrong_secret_fails_verification(
    verify: Callable[[str, bytes, dict[str, str]], None], refusal: type[Exception]
) -> None:
    with pytest.raises(refusal):
        verify(new_secret(), BODY, signed([new_secret()]))


def test_secret_bytes_are_the_base64_after_the_prefix() -> None:
    key = secrets.token_bytes(32)

    assert secret_bytes("whsec_" + base64.b64encode(key).decode()) == key
