"""The ``vidq`` command line against the whole stack: the installed console script, run as a user would.

Each command runs as its own process with ``VIDQ_URL`` / ``VIDQ_API_KEY`` (and the stack's
``VIDQ_*`` settings for the commands that reach the database or the broker), in a folder of its
own with no config file, output captured: stdout is not a terminal, so rich prints plain text.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.e2e.harness import until
from tests.e2e.stack import Running
from tests.media import BIG_BUCK_BUNNY, ffprobe, video_stream
from tests.settings import ROOT

pytestmark = pytest.mark.asyncio(loop_scope="module")

SCRIPT = ROOT / ".venv" / "bin" / "vidq"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "vidq"]


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines()]


async def vidq(
    running: Running,
    *args: str,
    cwd: Path,
    key: str | None = None,
    url: str | None = None,
    timeout: float = 120,
) -> Run:
    env = {
        **os.environ,
        **running.env,
        "VIDQ_URL": url or running.url,
        "VIDQ_API_KEY": key or running.api_key,
        "XDG_CONFIG_HOME": str(cwd / "config"),
        "COLUMNS": "120",
    }
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@dataclass(frozen=True)
class Uploaded:
    run: Run
    video_id: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def uploaded(running: Running, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    run = await vidq(
        running, "upload", str(BIG_BUCK_BUNNY), "--watch", "--json", cwd=tmp_path_factory.mktemp("cli")
    )
    events = run.lines() if run.code == 0 else []
    return Uploaded(run, events[0]["data"]["id"] if events else "")


async def test_upload_watch_json_prints_every_event_and_ends_with_video_ready(uploaded: Uploaded) -> None:
    assert uploaded.run.code == 0, uploaded.run.stderr
    assert uploaded.run.stderr == ""
    events = uploaded.run.lines()
    assert events[0]["type"] == "video.uploaded"
    assert events[-1]["type"] == "video.ready"
    assert events[-1]["data"]["status"] == "ready"
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    completed = {e["data"]["quality"] for e in events if e["type"] == "rendition.completed"}
    assert completed == {"720p", "480p", "360p", "240p", "144p"}


async def test_ls_show_and_watch_read_it(running: Running, uploaded: Uploaded, tmp_path: Path) -> None:
    listed = await vidq(running, "ls", "--json", cwd=tmp_path)
    assert listed.code == 0, listed.stderr
    assert uploaded.video_id in [v["id"] for v in listed.json()["data"]]

    shown = await vidq(running, "show", uploaded.video_id, "--json", cwd=tmp_path)
    assert shown.code == 0, shown.stderr
    assert shown.json()["status"] == "ready"
    assert len(shown.json()["renditions"]) == 5

    human = await vidq(running, "show", uploaded.video_id, cwd=tmp_path)
    assert human.code == 0
    assert "bigbuckbunny.mp4" in human.stdout
    assert "1280x720" in human.stdout

    replay = await vidq(running, "watch", uploaded.video_id, "--json", cwd=tmp_path)
    assert replay.code == 0
    assert replay.lines()[-1]["type"] == "video.ready"


async def test_uploads_create_gives_a_url_a_page_uploads_to_without_the_key(
    running: Running, tmp_path: Path
) -> None:
    made = await vidq(
        running, "uploads", "create", "-q", "144p", "--metadata", '{"via": "cli"}', cwd=tmp_path
    )
    assert made.code == 0, made.stderr
    url = made.stdout.strip()
    async with httpx.AsyncClient(timeout=60) as browser:  # no key
        sent = await browser.post(url, files={"file": ("bbb.mp4", BIG_BUCK_BUNNY.read_bytes(), "video/mp4")})
    assert sent.status_code == 202, sent.text
    assert sent.json()["metadata"] == {"via": "cli"}
    assert [r["quality"] for r in sent.json()["renditions"]] == ["144p"]


async def test_download_writes_a_playable_144p_mp4(
    running: Running, uploaded: Uploaded, tmp_path: Path
) -> None:
    run = await vidq(running, "download", uploaded.video_id, "--quality", "144p", cwd=tmp_path)
    assert run.code == 0, run.stderr
    saved = tmp_path / f"{uploaded.video_id}-144p.mp4"
    assert video_stream(ffprobe(saved))["height"] == 144

    again = await vidq(running, "download", uploaded.video_id, "--quality", "144p", cwd=tmp_path)
    assert again.code == 2
    assert again.stderr == f"vidq: {saved.name} exists; add --force to overwrite it\n"


async def test_webhooks_add_ls_test_deliveries_rm(running: Running, tmp_path: Path) -> None:
    target = f"{running.receiver_url}/cli-hook"
    added = await vidq(running, "webhooks", "add", target, "-e", "video.*", "--json", cwd=tmp_path)
    assert added.code == 0, added.stderr
    hook = added.json()
    assert hook["secret"].startswith("whsec_")

    listed = await vidq(running, "webhooks", "ls", "--json", cwd=tmp_path)
    assert hook["id"] in [h["id"] for h in listed.json()["data"]]

    tested = await vidq(running, "webhooks", "test", hook["id"], cwd=tmp_path)
    assert tested.code == 0, tested.stderr
    assert "answered 200" in tested.stdout
    await until(lambda: running.receiver.at("/cli-hook", "webhook.test"))

    log = await vidq(running, "webhooks", "deliveries", hook["id"], "--json", cwd=tmp_path)
    assert [(d["event_type"], d["status"]) for d in log.json()["data"]] == [("webhook.test", "succeeded")]

    rotated = await vidq(running, "webhooks", "rotate", hook["id"], "--grace", "2h", "--json", cwd=tmp_path)
    assert rotated.code == 0, rotated.stderr
    assert rotated.json()["secret"] not in (hook["secret"], None)
    assert len(rotated.json()["previous_secrets_sign_until"]) == 1
    cut = await vidq(running, "webhooks", "rotate", hook["id"], "--grace", "0", cwd=tmp_path)
    assert "no earlier secret signs any more" in cut.stdout

    removed = await vidq(running, "webhooks", "rm", hook["id"], cwd=tmp_path)
    assert removed.code == 0
    gone = await vidq(running, "webhooks", "deliveries", hook["id"], cwd=tmp_path)
    assert gone.code == 3
    assert gone.stderr == f"vidq: not found: no webhook '{hook['id']}'\n"


async def test_a_webhook_test_the_endpoint_refuses_exits_1(running: Running, tmp_path: Path) -> None:
    running.receiver.fail["/cli-refuses"] = 1
    added = await vidq(
        running, "webhooks", "add", f"{running.receiver_url}/cli-refuses", "--json", cwd=tmp_path
    )
    tested = await vidq(running, "webhooks", "test", added.json()["id"], cwd=tmp_path)
    assert tested.code == 1
    assert tested.stderr.startswith("vidq: webhook test failed: the endpoint answered 500")
    assert tested.stderr.count("\n") == 1


async def test_a_resumable_upload_sends_the_file_in_pieces_and_becomes_ready(
    running: Running, tmp_path: Path
) -> None:
    run = await vidq(
        running, "upload", str(BIG_BUCK_BUNNY), "--resumable", "-q", "144p", "--watch", "--json", cwd=tmp_path
    )
    assert run.code == 0, run.stderr
    events = run.lines()
    assert events[-1]["type"] == "video.ready"
    video = events[-1]["data"]
    assert video["source"]["filename"] == BIG_BUCK_BUNNY.name
    assert video["source"]["size_bytes"] == BIG_BUCK_BUNNY.stat().st_size
    assert [r["quality"] for r in video["renditions"]] == ["144p"]


async def test_human_upload_watch_shows_the_renditions(running: Running, tmp_path: Path) -> None:
    run = await vidq(
        running, "upload", str(BIG_BUCK_BUNNY), "--qualities", "240p,144p", "--watch", cwd=tmp_path
    )
    assert run.code == 0, run.stderr
    for quality in ("240p", "144p"):
        assert quality in run.stdout  # the final table
        assert quality in run.stderr  # the bars, printed once off a terminal
    assert "ready" in run.stdout
    assert "upload" in run.stderr
    assert "thumbnail" in run.stderr


async def test_a_bad_file_exits_1_with_the_apis_detail_in_one_line(running: Running, tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video at all\n")
    async with running.client() as api:
        with bad.open("rb") as file:
            detail = (await api.post("/v1/videos", files={"file": (bad.name, file)})).json()["detail"]
    run = await vidq(running, "upload", str(bad), cwd=tmp_path)
    assert run.code == 1
    assert run.stdout == ""
    assert run.stderr.endswith(f": {detail}\n")
    assert run.stderr.startswith("vidq: ")
    assert run.stderr.count("\n") == 1


async def test_a_wrong_key_exits_4_with_one_line(running: Running, tmp_path: Path) -> None:
    run = await vidq(running, "ls", key="vidq_not-a-key", cwd=tmp_path)
    assert run.code == 4
    assert run.stdout == ""
    assert run.stderr.startswith("vidq: missing or invalid API key: ")
    assert run.stderr.count("\n") == 1


async def test_a_gateway_that_is_not_there_exits_5(running: Running, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as probe:
        closed = "http://127.0.0.1:9"
        with pytest.raises(httpx.ConnectError):
            await probe.get(closed)
    run = await vidq(running, "ls", url=closed, cwd=tmp_path)
    assert run.code == 5
    assert run.stderr == f"vidq: unavailable: cannot connect to {closed} (Connection refused)\n"


async def test_keys_create_makes_a_key_that_works(running: Running, tmp_path: Path) -> None:
    created = await vidq(running, "keys", "create", "--name", "cli-e2e", cwd=tmp_path)
    assert created.code == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("vidq_")
    listed = await vidq(running, "ls", "--json", key=key, cwd=tmp_path)
    assert listed.code == 0
    assert listed.json()["data"] == []  # a new client sees none of the others' videos


async def test_dlq_ls_lists_every_dead_letter_queue(running: Running, tmp_path: Path) -> None:
    run = await vidq(running, "dlq", "ls", "--json", cwd=tmp_path)
    assert run.code == 0, run.stderr
    queues = {row["queue"] for row in run.json()["data"]}
    assert {"vidq.transcode.720p.dlq", "vidq.notifier.deliveries.dlq"} <= queues
    missing = await vidq(running, "dlq", "ls", "vidq.nope", cwd=tmp_path)
    assert missing.code == 3
    assert missing.stderr.startswith("vidq: not found: no queue 'vidq.nope.dlq'")


async def test_rm_then_show_exits_3(running: Running, uploaded: Uploaded, tmp_path: Path) -> None:
    removed = await vidq(running, "rm", uploaded.video_id, cwd=tmp_path)
    assert removed.code == 0, removed.stderr
    shown = await vidq(running, "show", uploaded.video_id, cwd=tmp_path)
    assert shown.code == 3
    assert shown.stderr == f"vidq: not found: no video '{uploaded.video_id}'\n"
