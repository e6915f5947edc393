"""The import slots of one gateway: a client's share and the gateway's total, refused not queued."""

from __future__ import annotations

import contextlib

import pytest

from gateway.errors import TooManyOpen, Unavailable
from gateway.imports import ImportSlots

pytestmark = pytest.mark.unit


def test_a_clients_share_is_its_own_and_the_total_is_everyones() -> None:
    slots = ImportSlots(total=3, per_client=2)
    with contextlib.ExitStack() as held:
        held.enter_context(slots.take("alice"))
        held.enter_context(slots.take("alice"))
        with pytest.raises(TooManyOpen, match="already has 2 imports") as over:
            held.enter_context(slots.take("alice"))
        assert over.value.headers == {"Retry-After": "10"}
        held.enter_context(slots.take("bob"))  # bob's share is untouched by alice's
        with pytest.raises(Unavailable, match="downloading 3 imports") as full:
            held.enter_context(slots.take("carol"))
        assert full.value.headers == {"Retry-After": "10"}
        assert slots.in_use == 3
    assert slots.in_use == 0


def test_a_slot_comes_back_when_its_import_fails_and_a_refusal_takes_none() -> None:
    slots = ImportSlots(total=1, per_client=1)
    with pytest.raises(RuntimeError), slots.take("alice"):
        raise RuntimeError("the download broke off")
    assert slots.in_use == 0
    with slots.take("alice"):
        with pytest.raises(TooManyOpen), slots.take("alice"):
            pass  # pragma: no cover - refused before
        with pytest.raises(Unavailable), slots.take("bob"):
            pass  # pragma: no cover - refused before
        assert slots.in_use == 1
    assert slots.in_use == 0
