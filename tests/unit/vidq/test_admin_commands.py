"""``keys create`` (a subprocess of the gateway) and ``dlq`` (shared.ops), with both faked."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

import vidq.deadletters
from tests.unit.vidq.fakeapi import FakeApi, invoke
from vidq.errors import Unreachable


class FakeRun:
    def __init__(self, returncode: int, stdout: str = "", stderr: str = "") -> None:
        self.result = subprocess.CompletedProcess[str]([], returncode, stdout, stderr)
        self.argv: list[str] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.argv = argv
        return self.result


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    fake = FakeRun(0, "vidq_newkey\n", "client cli_9 (alice); callback_url events are signed with whsec_cb\n")
    monkeypatch.setattr(subprocess, "run", fake)
    return fake


def test_keys_create_runs_the_gateway_command_and_prints_the_key(run: FakeRun) -> None:
    result = invoke(FakeApi(), "keys", "create", "--name", "alice")
    assert result.exit_code == 0, result.output
    assert run.argv[1:] == ["-m", "gateway", "keys", "create", "--name", "alice"]
    assert result.stdout == "vidq_newkey\n"
    assert "cli_9" in result.stderr


def test_keys_create_json(run: FakeRun) -> None:
    result = invoke(FakeApi(), "keys", "create", "--name", "alice", "--json")
    assert json.loads(result.stdout) == {
        "name": "alice",
        "api_key": "vidq_newkey",
        "client_id": "cli_9",
        "callback_secret": "whsec_cb",
    }


@pytest.mark.parametrize(
    ("stderr", "code", "line"),
    [
        (
            "Traceback …\nConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)\n",
            5,
            "vidq: unavailable: keys create cannot reach the database: "
            "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)",
        ),
        ("/x/python: No module named gateway\n", 1, "vidq: keys create needs the gateway installed"),
        (
            '{"level": "error", "message": "migration 0003 failed"}\n',
            1,
            "vidq: keys create failed: migration 0003 failed",
        ),
    ],
)
def test_keys_create_failures_are_one_line(run: FakeRun, stderr: str, code: int, line: str) -> None:
    run.result = subprocess.CompletedProcess([], 1, "", stderr)
    result = invoke(FakeApi(), "keys", "create", "--name", "alice")
    assert result.exit_code == code
    assert result.stderr.startswith(line)
    assert result.stderr.count("\n") == 1


def test_keys_ls_and_revoke_run_the_gateway_command_and_say_which_database(run: FakeRun) -> None:
    run.result = subprocess.CompletedProcess(
        [], 0, "KEY ID  PREFIX\nkey_1   vidq_abcdefg\n", "database vidq at 127.0.0.1:5432 (user vidq)\n"
    )
    listed = invoke(FakeApi(), "keys", "ls", "--all")
    assert listed.exit_code == 0, listed.output
    assert run.argv[1:] == ["-m", "gateway", "keys", "ls", "--all"]
    assert listed.stdout == "KEY ID  PREFIX\nkey_1   vidq_abcdefg\n"
    assert "database vidq at 127.0.0.1:5432" in listed.stderr

    run.result = subprocess.CompletedProcess(
        [],
        0,
        "",
        "database vidq at 127.0.0.1:5432\nkey key_1 (vidq_abcdefg…) of client cli_9 (a) is revoked\n",
    )
    revoked = invoke(FakeApi(), "keys", "revoke", "vidq_abcdefg")
    assert revoked.exit_code == 0, revoked.output
    assert run.argv[1:] == ["-m", "gateway", "keys", "revoke", "vidq_abcdefg"]
    assert "is revoked" in revoked.stderr


def test_keys_revoke_of_an_unknown_key_is_not_found(run: FakeRun) -> None:
    critical = '{"level": "CRITICAL", "message": "cannot start: no API key \'nope\' (give a key id …)"}\n'
    run.result = subprocess.CompletedProcess([], 78, "", "database vidq at 127.0.0.1:5432\n" + critical)
    result = invoke(FakeApi(), "keys", "revoke", "nope")
    assert result.exit_code == 3
    assert result.stderr == "vidq: not found: no API key 'nope' (give a key id …)\n"


def test_keys_create_for_an_existing_client_passes_it_on(run: FakeRun) -> None:
    assert invoke(FakeApi(), "keys", "create", "--name", "b", "--client", "cli_9").exit_code == 0
    assert run.argv[1:] == ["-m", "gateway", "keys", "create", "--name", "b", "--client", "cli_9"]


def test_dlq_ls_json(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"queue": "vidq.transcode.720p.dlq", "work_queue": "vidq.transcode.720p", "messages": 2}]

    async def depths() -> list[dict[str, Any]]:
        return rows

    monkeypatch.setattr(vidq.deadletters, "depths", depths)
    result = invoke(FakeApi(), "dlq", "ls", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"data": rows}


def test_dlq_without_a_broker_exits_5(monkeypatch: pytest.MonkeyPatch) -> None:
    async def letters(queue: str) -> list[dict[str, Any]]:
        raise Unreachable("unavailable: cannot connect to the broker at 127.0.0.1")

    monkeypatch.setattr(vidq.deadletters, "letters", letters)
    result = invoke(FakeApi(), "dlq", "ls", "vidq.transcode.720p")
    assert result.exit_code == 5
    assert result.stderr == "vidq: unavailable: cannot connect to the broker at 127.0.0.1\n"


def test_dlq_replay_of_a_missing_message_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    async def replay(queue: str, message_id: str | None) -> int:
        return 0

    monkeypatch.setattr(vidq.deadletters, "replay", replay)
    result = invoke(FakeApi(), "dlq", "replay", "vidq.transcode.720p", "--id", "job_x")
    assert result.exit_code == 3


@pytest.mark.parametrize(
    "args",
    [
        ["replay", "vidq.transcode.720p"],
        ["replay", "q", "--id", "x", "--all"],
        ["purge", "vidq.transcode.720p"],
    ],
)
def test_dlq_commands_that_need_a_choice_are_usage_errors(args: list[str]) -> None:
    result = invoke(FakeApi(), "dlq", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("vidq: ")
