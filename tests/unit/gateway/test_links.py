"""Signed links to a video's files: stable within the hour, good until they expire, for one file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest

from gateway.links import LinkRefused, Links, accepted_keys, rendition_file, thumbnail_file

LINKS = Links("https://vidq.example.com", (b"k" * 32,), ttl_s=7 * 24 * 3600)
NOW = 1_800_000_000.0  # a whole hour (1_800_000_000 / 3600 = 500,000)


def _query(url: str) -> tuple[int, str]:
    query = parse_qs(urlparse(url).query)
    return int(query["expires"][0]), query["signature"][0]


def test_a_signed_link_is_the_plain_one_with_an_expiry_rounded_up_to_the_hour() -> None:
    url = LINKS.signed_rendition("vid_1", "720p", now=NOW + 1)
    assert url is not None
    assert url.startswith("https://vidq.example.com/v1/videos/vid_1/renditions/720p?expires=")
    expires, _ = _query(url)
    assert expires == NOW + 7 * 24 * 3600 + 3600
    # the same link all hour long: caches and clients see one URL
    assert LINKS.signed_rendition("vid_1", "720p", now=NOW + 3599) == url
    assert LINKS.signed_rendition("vid_1", "720p", now=NOW + 3601) != url


def test_a_link_is_accepted_for_its_own_file_until_it_expires() -> None:
    url = LINKS.signed_rendition("vid_1", "720p", now=NOW)
    assert url is not None
    expires, signature = _query(url)
    assert LINKS.check("vid_1", rendition_file("720p"), expires, signature, now=expires - 1) == 1
    with pytest.raises(LinkRefused, match="expired"):
        LINKS.check("vid_1", rendition_file("720p"), expires, signature, now=expires)
    for video_id, file in (
        ("vid_2", rendition_file("720p")),
        ("vid_1", rendition_file("360p")),
        ("vid_1", thumbnail_file(640)),
        ("vid_1", "720p"),
    ):
        with pytest.raises(LinkRefused, match="signature"):
            LINKS.check(video_id, file, expires, signature, now=NOW)
    with pytest.raises(LinkRefused, match="signature"):
        LINKS.check("vid_1", rendition_file("720p"), expires + 3600, signature, now=NOW)
    other_key = Links(LINKS.base_url, (b"x" * 32,))
    with pytest.raises(LinkRefused, match="signature"):
        other_key.check("vid_1", rendition_file("720p"), expires, signature, now=NOW)


def test_a_thumbnail_link_opens_its_own_width_only() -> None:
    url = LINKS.signed_thumbnail("vid_1", 640, now=NOW)
    assert url is not None
    assert url.startswith("https://vidq.example.com/v1/videos/vid_1/thumbnail?width=640&expires=")
    LINKS.check("vid_1", thumbnail_file(640), *_query(url), now=NOW)
    for other in (thumbnail_file(1280), thumbnail_file(""), thumbnail_file("0640")):
        with pytest.raises(LinkRefused, match="signature"):
            LINKS.check("vid_1", other, *_query(url), now=NOW)


def test_without_a_key_there_are_no_signed_links_and_none_is_accepted() -> None:
    plain = Links("https://vidq.example.com")
    assert plain.signed_rendition("vid_1", "720p") is None
    assert plain.signed_thumbnail("vid_1", 640) is None
    with pytest.raises(LinkRefused, match="not enabled"):
        plain.check("vid_1", rendition_file("720p"), 2_000_000_000, "x")


def test_after_a_rotation_the_new_key_signs_and_the_old_links_still_open() -> None:
    old, new = b"o" * 32, b"n" * 32
    before = Links(LINKS.base_url, (old,)).signed_rendition("vid_1", "720p", now=NOW)
    assert before is not None
    rotated = Links(LINKS.base_url, (new, old))
    after = rotated.signed_rendition("vid_1", "720p", now=NOW)
    assert after is not None
    assert after != before
    rotated.check("vid_1", rendition_file("720p"), *_query(before), now=NOW)
    rotated.check("vid_1", rendition_file("720p"), *_query(after), now=NOW)
    with pytest.raises(LinkRefused, match="signature"):  # revoked: the old key is gone
        Links(LINKS.base_url, (new,)).check("vid_1", rendition_file("720p"), *_query(before), now=NOW)


def test_an_older_key_is_accepted_while_links_it_signed_may_be_unexpired() -> None:
    ttl = 7 * 24 * 3600
    made = datetime(2026, 12, 1, tzinfo=UTC)
    keys = [(b"c", made + timedelta(days=10)), (b"b", made + timedelta(days=2)), (b"a", made)]
    # b signed until c was made (day 10): its links last until day 17 and an hour
    assert accepted_keys(keys, ttl, made + timedelta(days=17)) == (b"c", b"b")
    assert accepted_keys(keys, ttl, made + timedelta(days=17, hours=1, seconds=1)) == (b"c",)
    # a signed until day 2
    assert accepted_keys(keys, ttl, made + timedelta(days=9)) == (b"c", b"b", b"a")
    assert accepted_keys(keys, ttl, made + timedelta(days=9, hours=2)) == (b"c", b"b")
    assert accepted_keys([], ttl, made) == ()
