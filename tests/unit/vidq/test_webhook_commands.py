from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.unit.vidq.fakeapi import FakeApi, invoke, ok, problem
from vidq.commands.webhooks import moment
from vidq.errors import UsageProblem

HOOK = {
    "id": "whk_1",
    "url": "https://example.com/hooks",
    "events": ["video.*"],
    "description": "",
    "enabled": True,
    "disabled_reason": None,
    "created_at": "2025-01-02T03:04:05Z",
    "updated_at": "2025-01-02T03:04:05Z",
}


def _delivery(status: str, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "dlv_1",
        "event_id": "evt_t",
        "event_type": "webhook.test",
        "video_id": "",
        "status": status,
        "attempts": len(attempts),
        "created_at": "2025-01-02T03:04:05Z",
        "next_attempt_at": None,
        "completed_at": None,
        "last_status_code": attempts[-1]["status_code"] if attempts else None,
        "last_error": None,
        "attempt_log": attempts,
    }


def _attempt(code: int | None, error: str | None = None) -> dict[str, Any]:
    return {
        "attempted_at": "2025-01-02T03:04:06Z",
        "status_code": code,
        "latency_ms": 12,
        "error": error,
        "response_body": "",
        "manual": False,
    }


def test_add_posts_url_patterns_and_shows_the_secret_once() -> None:
    api = FakeApi().on("POST", "/v1/webhooks", ok({**HOOK, "secret": "whsec_abc"}, 201))
    result = invoke(
        api, "webhooks", "add", "https://example.com/hooks", "-e", "video.*", "-e", "rendition.failed"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(api.requests[0].content) == {
        "url": "https://example.com/hooks",
        "events": ["video.*", "rendition.failed"],
        "description": "",
    }
    assert "whsec_abc" in result.stdout


def test_add_subscribes_to_every_event_by_default() -> None:
    api = FakeApi().on("POST", "/v1/webhooks", ok({**HOOK, "secret": "whsec_abc"}, 201))
    invoke(api, "webhooks", "add", "https://example.com/hooks", "--json")
    assert json.loads(api.requests[0].content)["events"] == ["*"]


def test_add_refused_by_the_api_exits_1_with_its_detail() -> None:
    api = FakeApi().on(
        "POST", "/v1/webhooks", problem(422, "url: Input should be a valid URL", "Invalid request")
    )
    result = invoke(api, "webhooks", "add", "notaurl")
    assert result.exit_code == 1
    assert result.stderr == "vidq: invalid request: url: Input should be a valid URL\n"


class TestRotate:
    PATH = "/v1/webhooks/whk_1/rotate-secret"

    def test_a_day_of_grace_by_default_and_the_new_secret_shown(self) -> None:
        until = ["2025-01-03T03:04:05Z"]
        api = FakeApi().on(
            "POST", self.PATH, ok({**HOOK, "secret": "whsec_new", "previous_secrets_sign_until": until})
        )
        result = invoke(api, "webhooks", "rotate", "whk_1")
        assert result.exit_code == 0, result.output
        assert json.loads(api.requests[0].content) == {"grace_s": 86400}
        assert "whsec_new" in result.stdout
        assert "also sign until 2025-01-03T03:04:05Z" in result.stdout

    @pytest.mark.parametrize(("grace", "seconds"), [("0", 0), ("30m", 1800), ("2h", 7200)])
    def test_the_grace_is_sent_in_seconds(self, grace: str, seconds: int) -> None:
        api = FakeApi().on(
            "POST", self.PATH, ok({**HOOK, "secret": "whsec_new", "previous_secrets_sign_until": []})
        )
        result = invoke(api, "webhooks", "rotate", "whk_1", "--grace", grace)
        assert result.exit_code == 0, result.output
        assert json.loads(api.requests[0].content) == {"grace_s": seconds}

    def test_a_grace_that_is_no_duration_is_a_usage_error_sent_nowhere(self) -> None:
        api = FakeApi()
        result = invoke(api, "webhooks", "rotate", "whk_1", "--grace", "soon")
        assert result.exit_code == 2
        assert api.requests == []


def test_ls_json_and_table() -> None:
    api = FakeApi().on("GET", "/v1/webhooks", ok({"data": [HOOK]}))
    assert json.loads(invoke(api, "webhooks", "ls", "--json").stdout) == {"data": [HOOK]}
    table = invoke(api, "webhooks", "ls").stdout
    assert "whk_1" in table
    assert "video.*" in table


def test_rm_of_an_unknown_webhook_exits_3() -> None:
    api = FakeApi().on("DELETE", "/v1/webhooks/whk_x", problem(404, "no webhook 'whk_x'", "Not found"))
    result = invoke(api, "webhooks", "rm", "whk_x")
    assert result.exit_code == 3
    assert result.stderr == "vidq: not found: no webhook 'whk_x'\n"


def test_deliveries_passes_the_filters() -> None:
    page = {"data": [_delivery("succeeded", [_attempt(200)])], "next_cursor": None, "has_more": False}
    api = FakeApi().on("GET", "/v1/webhooks/whk_1/deliveries", ok(page))
    result = invoke(
        api, "webhooks", "deliveries", "whk_1", "--status", "failed", "--video", "vid_1", "--json"
    )
    assert json.loads(result.stdout) == page
    assert dict(api.requests[0].url.params) == {"status": "failed", "video_id": "vid_1", "limit": "20"}


def test_one_delivery_shows_its_attempts_and_the_body_the_endpoint_received() -> None:
    one = {
        **_delivery("failed", [_attempt(500, "HTTP 500")]),
        "payload": {"id": "evt_t", "type": "webhook.test"},
    }
    api = FakeApi().on("GET", "/v1/webhooks/whk_1/deliveries/dlv_1", ok(one))

    shown = invoke(api, "webhooks", "delivery", "whk_1", "dlv_1")
    as_json = invoke(api, "webhooks", "delivery", "whk_1", "dlv_1", "--json")

    assert shown.exit_code == 0, shown.output
    assert "dlv_1" in shown.stdout
    assert '"type": "webhook.test"' in shown.stdout  # the payload, as JSON
    assert json.loads(as_json.stdout) == one


def test_an_unknown_delivery_is_not_found() -> None:
    api = FakeApi().on(
        "GET", "/v1/webhooks/whk_1/deliveries/dlv_x", problem(404, "no delivery 'dlv_x' for webhook 'whk_1'")
    )
    result = invoke(api, "webhooks", "delivery", "whk_1", "dlv_x")
    assert result.exit_code == 3
    assert "no delivery 'dlv_x'" in result.output


class TestReplay:
    def test_since_an_age_sends_an_rfc3339_time(self) -> None:
        api = FakeApi().on("POST", "/v1/webhooks/whk_1/replay", ok({"status": "queued"}, 202))
        result = invoke(api, "webhooks", "replay", "whk_1", "--since", "2h", "--failed-only")
        assert result.exit_code == 0, result.output
        params = api.requests[0].url.params
        assert datetime.fromisoformat(params["since"]).tzinfo is not None
        assert params["failed_only"] == "true"

    def test_one_delivery(self) -> None:
        api = FakeApi().on("POST", "/v1/webhooks/whk_1/deliveries/dlv_1/retry", ok({"status": "queued"}, 202))
        assert invoke(api, "webhooks", "replay", "whk_1", "--delivery", "dlv_1").exit_code == 0
        assert len(api.requests) == 1

    @pytest.mark.parametrize("args", [[], ["--since", "1h", "--delivery", "dlv_1"], ["--since", "yesterday"]])
    def test_needs_exactly_one_valid_choice(self, args: list[str]) -> None:
        result = invoke(FakeApi(), "webhooks", "replay", "whk_1", *args)
        assert result.exit_code == 2
        assert result.stderr.startswith("vidq: ")

    def test_moments(self) -> None:
        now = datetime(2025, 1, 2, 12, 0, tzinfo=UTC)
        assert moment("30m", now=now) == "2025-01-02T11:30:00+00:00"
        assert moment("2025-01-02T03:04:05Z") == "2025-01-02T03:04:05+00:00"
        with pytest.raises(UsageProblem):
            moment("soon")


class TestTest:
    def _api(self, *rows: dict[str, Any]) -> FakeApi:
        sent = ok({"status": "queued", "event_id": "evt_t", "delivery_id": "dlv_1"}, 202)
        pages = [ok({"data": [row] if row else [], "next_cursor": None, "has_more": False}) for row in rows]
        return (
            FakeApi()
            .on("POST", "/v1/webhooks/whk_1/test", sent)
            .on("GET", "/v1/webhooks/whk_1/deliveries", *pages)
        )

    def test_waits_for_the_first_attempt_and_reports_it(self) -> None:
        api = self._api({}, _delivery("pending", []), _delivery("succeeded", [_attempt(200)]))
        result = invoke(api, "webhooks", "test", "whk_1")
        assert result.exit_code == 0, result.output
        assert "answered 200" in result.stdout
        assert api.requests[-1].url.params["event_id"] == "evt_t"

    def test_an_endpoint_answering_an_error_fails_the_command(self) -> None:
        api = self._api(_delivery("pending", [_attempt(500)]))
        result = invoke(api, "webhooks", "test", "whk_1", "--json")
        assert result.exit_code == 1
        assert json.loads(result.stdout)["attempt_log"][0]["status_code"] == 500
        assert result.stderr == "vidq: webhook test failed: the endpoint answered 500 (delivery dlv_1)\n"

    def test_an_endpoint_not_answering_fails_with_the_error(self) -> None:
        api = self._api(_delivery("pending", [_attempt(None, "timed out after 15 s")]))
        result = invoke(api, "webhooks", "test", "whk_1")
        assert result.exit_code == 1
        assert result.stderr == "vidq: webhook test failed: timed out after 15 s (delivery dlv_1)\n"

    def test_no_attempt_in_time_fails(self) -> None:
        api = self._api(_delivery("pending", []))
        result = invoke(api, "webhooks", "test", "whk_1", "--timeout", "1")
        assert result.exit_code == 1
        assert "no attempt within 1 s" in result.stderr
        assert len(api.sent("GET", "/v1/webhooks/whk_1/deliveries")) == 4

    def test_no_wait_only_queues(self) -> None:
        api = self._api()
        result = invoke(api, "webhooks", "test", "whk_1", "--no-wait", "--json")
        assert result.exit_code == 0
        assert json.loads(result.stdout)["delivery_id"] == "dlv_1"
        assert isinstance(api.requests[0], httpx.Request)
        assert len(api.requests) == 1
