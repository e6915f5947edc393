"""The text fields of an upload: qualities, callback_url, notify_email and metadata."""

from __future__ import annotations

import json

import pytest

from gateway.errors import InvalidRequest
from gateway.settings import GatewaySettings
from gateway.uploads import Options, nesting, parse_options
from shared.ladder import Quality
from tests.settings import make


@pytest.fixture
def settings() -> GatewaySettings:
    return make(GatewaySettings)


def test_no_fields_mean_every_rung_no_callback_no_email_and_empty_metadata(settings: GatewaySettings) -> None:
    assert parse_options({}, settings) == Options(None, None, None, {})


def test_blank_fields_count_as_absent(settings: GatewaySettings) -> None:
    fields = {"qualities": " ", "callback_url": "", "notify_email": "  ", "metadata": "\n"}

    assert parse_options(fields, settings) == Options(None, None, None, {})


def test_all_fields_are_read(settings: GatewaySettings) -> None:
    options = parse_options(
        {
            "qualities": "720p, 360p",
            "callback_url": " https://hooks.example.com/vidq?x=1 ",
            "notify_email": "ana@example.com",
            "metadata": '{"customer": "c_42", "tags": ["a", "b"], "n": 1}',
        },
        settings,
    )

    assert options.qualities == (Quality.P720, Quality.P360)
    assert options.callback_url == "https://hooks.example.com/vidq?x=1"
    assert options.notify_email == "ana@example.com"
    assert options.metadata == {"customer": "c_42", "tags": ["a", "b"], "n": 1}


@pytest.mark.parametrize(("qualities", "named"), [("720p,4k", "4k"), ("999p", "999p"), ("hd", "hd")])
def test_an_unknown_quality_is_refused_by_name(settings: GatewaySettings, qualities: str, named: str) -> None:
    with pytest.raises(InvalidRequest, match=f"unknown quality {named}") as caught:
        parse_options({"qualities": qualities}, settings)

    assert caught.value.status == 422


def test_a_qualities_list_of_only_commas_is_refused(settings: GatewaySettings) -> None:
    with pytest.raises(InvalidRequest, match="qualities is empty"):
        parse_options({"qualities": ",,"}, settings)


@pytest.mark.parametrize(
    "url", ["http://93.184.216.34:9000/hook", "https://hooks.example.com", "https://example.com:8443/a/b?c=d"]
)
def test_an_http_or_https_callback_url_is_accepted(settings: GatewaySettings, url: str) -> None:
    assert parse_options({"callback_url": url}, settings).callback_url == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "hooks.example.com/vidq",
        "//example.com",
        "javascript:alert(1)",
        "https://",
        "file:///etc/passwd",
    ],
)
def test_a_callback_url_that_is_not_absolute_http_is_refused(settings: GatewaySettings, url: str) -> None:
    with pytest.raises(InvalidRequest, match="callback_url"):
        parse_options({"callback_url": url}, settings)


@pytest.mark.parametrize("email", ["ana@example.com", "first.last+tag@mail.example.co.uk"])
def test_a_notify_email_address_is_accepted(settings: GatewaySettings, email: str) -> None:
    assert parse_options({"notify_email": email}, settings).notify_email == email


def test_a_notify_email_with_a_display_name_keeps_the_address() -> None:
    options = parse_options({"notify_email": "Ana <ana@example.com>"}, make(GatewaySettings))
    assert options.notify_email == "ana@example.com"


@pytest.mark.parametrize(
    "email",
    [
        "ana",
        "ana@example",
        "@example.com",
        "ana@@example.com",
        "a na@example.com",
        "a;semi@example.com",  # a mail server reads a list: "a" (a local mailbox?) and the rest
        "b,comma@example.com",
        "a@example.com, b@example.com",
    ],
)
def test_a_notify_email_that_is_not_an_address_is_refused(settings: GatewaySettings, email: str) -> None:
    with pytest.raises(InvalidRequest, match="notify_email"):
        parse_options({"notify_email": email}, settings)


@pytest.mark.parametrize("metadata", ["[1, 2]", '"text"', "42", "null", "true"])
def test_metadata_must_be_a_json_object(settings: GatewaySettings, metadata: str) -> None:
    with pytest.raises(InvalidRequest, match="metadata must be a JSON object"):
        parse_options({"metadata": metadata}, settings)


@pytest.mark.parametrize("metadata", ["{customer: 1}", "{", "{'a': 1}"])
def test_metadata_that_is_not_json_is_refused(settings: GatewaySettings, metadata: str) -> None:
    with pytest.raises(InvalidRequest, match="metadata is not valid JSON"):
        parse_options({"metadata": metadata}, settings)


@pytest.mark.parametrize("metadata", ['{"ratio": NaN}', '{"big": Infinity}', '{"small": -Infinity}'])
def test_metadata_with_values_json_does_not_have_is_refused(settings: GatewaySettings, metadata: str) -> None:
    with pytest.raises(InvalidRequest, match="metadata is not valid JSON"):
        parse_options({"metadata": metadata}, settings)


def padded_object(size: int, char: str = "x") -> str:
    """A JSON object of exactly ``size`` UTF-8 bytes."""
    text = json.dumps({"pad": ""})
    room = size - len(text.encode())
    per_char = len(char.encode())
    assert room % per_char == 0
    return json.dumps({"pad": char * (room // per_char)}, ensure_ascii=False)


def test_metadata_of_exactly_4_kib_is_accepted(settings: GatewaySettings) -> None:
    metadata = padded_object(4096)

    assert len(metadata.encode()) == 4096
    assert parse_options({"metadata": metadata}, settings).metadata["pad"] == "x" * (4096 - 11)


@pytest.mark.parametrize(("size", "char"), [(4097, "x"), (4097, "é")])
def test_metadata_over_4_kib_is_refused_counting_bytes_not_characters(
    settings: GatewaySettings, size: int, char: str
) -> None:
    metadata = padded_object(size, char)

    assert len(metadata.encode()) == size
    with pytest.raises(InvalidRequest, match="metadata is over 4096 bytes"):
        parse_options({"metadata": metadata}, settings)


def test_the_metadata_limit_follows_the_settings() -> None:
    small = make(GatewaySettings, max_metadata_bytes=16)

    with pytest.raises(InvalidRequest, match="over 16 bytes"):
        parse_options({"metadata": padded_object(17)}, small)
    assert parse_options({"metadata": padded_object(16)}, small).metadata == {"pad": "xxxxx"}


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/cb", "http://169.254.169.254/latest", "https://[::1]/cb", "http://localhost/cb"],
)
def test_a_callback_url_to_a_private_address_is_refused_unless_allowlisted(url: str) -> None:
    with pytest.raises(InvalidRequest, match=r"callback_url.*VIDQ_WEBHOOK_ALLOW_HOSTS"):
        parse_options({"callback_url": url}, make(GatewaySettings))
    allowing = make(GatewaySettings, webhook_allow_hosts="127.0.0.1,169.254.169.254,::1,localhost")
    assert parse_options({"callback_url": url}, allowing).callback_url == url


def nested(depth: int) -> str:
    """A JSON object whose one value nests ``depth`` levels deep in all (arrays inside it)."""
    return '{"a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("depth", [33, 900, 1990])  # 1990 levels are 3,986 bytes, under 4 KiB
def test_metadata_nested_too_deep_is_refused_before_it_is_parsed(
    settings: GatewaySettings, depth: int
) -> None:
    # Parsed and walked, 1990 levels exhausted the recursion limit: a 500, not a 422.
    with pytest.raises(InvalidRequest, match="metadata nests deeper than 32 levels"):
        parse_options({"metadata": nested(depth)}, settings)


def test_metadata_nested_32_levels_is_accepted_and_brackets_in_strings_do_not_count(
    settings: GatewaySettings,
) -> None:
    assert parse_options({"metadata": nested(32)}, settings).metadata["a"] is not None
    text = json.dumps({'quote\\"[': "[" * 100 + '\\"{' * 50, "n": [[1]]})

    assert nesting(text) == 3
    assert parse_options({"metadata": text}, settings).metadata["n"] == [[1]]


@pytest.mark.parametrize("number", ["1e400", "-1e999"])
def test_metadata_with_a_number_past_the_float_range_is_refused(
    settings: GatewaySettings, number: str
) -> None:
    # parsed as infinity, written as Infinity, refused by jsonb when the video was recorded: a 500
    with pytest.raises(InvalidRequest, match=f"the number {number}, out of range"):
        parse_options({"metadata": f'{{"a": {number}}}'}, settings)


def test_metadata_with_a_lone_surrogate_from_a_json_body_is_refused_not_mismeasured(
    settings: GatewaySettings,
) -> None:
    # a JSON body's "\ud800" reaches the check as the character itself, which UTF-8 cannot encode
    with pytest.raises(InvalidRequest, match="lone UTF-16 surrogate"):
        parse_options({"metadata": '{"a": "\ud800"}'}, settings)
