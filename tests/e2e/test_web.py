"""The web page in a real headless Chromium against the whole stack as processes.

Paste the key, add a webhook endpoint, upload the real clip, watch every rendition bar reach
100 % from the live stream, play a rendition, then read the list, the event timeline and the
delivery log. Screenshots go to ``test-artifacts/`` (``web.png`` is the video as it finished).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.e2e.harness import until
from tests.e2e.stack import Running
from tests.media import BIG_BUCK_BUNNY, make_clip
from tests.settings import ROOT
from tests.sites import site

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
PLANNED = {
    "720p": (1280, 720),
    "480p": (852, 480),
    "360p": (640, 360),
    "240p": (426, 240),
    "144p": (256, 144),
}

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason="needs Debian's chromium at /usr/bin/chromium (deploy/local/setup.sh --with-browser)",
    ),
]

# Records every value each rendition bar takes (setting progress.value sets its attribute).
WATCH_BARS = """() => {
  window.barValues = {};
  new MutationObserver((records) => {
    for (const record of records) {
      const bar = record.target;
      if (bar.matches?.("progress[data-quality]")) {
        (window.barValues[bar.dataset.quality] ??= []).push(bar.value);
      }
    }
  }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ["value"] });
}"""


@dataclass
class Browser:
    page: Any
    console_errors: list[str] = field(default_factory=list)

    async def go(self, url: str) -> None:
        await self.page.goto(url)
        await self.page.wait_for_selector("main h1")

    async def until(self, predicate: str, arg: Any = None, timeout: float = 60.0) -> None:
        """Wait for a JavaScript predicate to hold.

        Playwright's ``wait_for_function`` evaluates its predicate with ``eval`` inside the page,
        which the page's Content-Security-Policy forbids (rightly); ``evaluate`` is not subject to
        it, so poll with that and keep the policy in force for the whole test.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.page.evaluate(predicate, arg):
            if loop.time() > deadline:
                shown = await self.page.evaluate("() => document.body.innerText")
                raise AssertionError(
                    f"not true within {timeout} s: {predicate}\n--- the page shows:\n{shown}\n"
                    f"--- console errors: {self.console_errors}"
                )
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await chromium.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(60_000)
            opened = Browser(page)
            page.on(
                "console",
                lambda message: (
                    opened.console_errors.append(message.text) if message.type == "error" else None
                ),
            )
            page.on("pageerror", lambda error: opened.console_errors.append(f"uncaught: {error}"))
            yield opened
        finally:
            await chromium.close()


async def _save_key(browser: Browser, key: str) -> None:
    page = browser.page
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Save key").click()
    await browser.until("() => document.getElementById('key-owner').textContent === 'e2e'")


async def _add_endpoint(browser: Browser, url: str) -> str:
    page = browser.page
    await page.get_by_role("link", name="Webhooks").click()
    await page.get_by_label("URL", exact=True).fill(url)  # the upload page has a "Video URL"
    await page.get_by_label("Events").fill("video.*")
    await page.get_by_label("Description").fill("from the web page")
    await page.get_by_role("button", name="Add endpoint").click()
    secret = await page.locator(".notice .secret").text_content()
    assert secret is not None
    assert secret.startswith("whsec_")
    row = page.locator("#webhooks tbody tr", has_text=url)
    await row.wait_for()
    webhook_id = await row.get_attribute("data-webhook-id")
    assert webhook_id
    return str(webhook_id)


async def _upload_and_watch(browser: Browser, running: Running) -> str:
    page = browser.page
    await page.get_by_role("link", name="Upload", exact=True).click()
    await page.wait_for_selector("#file")
    await page.evaluate(WATCH_BARS)
    await page.set_input_files("#file", BIG_BUCK_BUNNY)

    upload_bar = page.locator("#upload-progress")
    assert await upload_bar.get_attribute("aria-label") == "Upload"
    await browser.until(
        "(size) => { const bar = document.getElementById('upload-progress');"
        " return bar.max >= size && bar.value === bar.max; }",  # max: the file's size
        BIG_BUCK_BUNNY.stat().st_size,
    )
    panel = page.locator("article.video")
    await panel.wait_for()
    video_id = await panel.get_attribute("data-video-id")
    assert video_id

    bars = page.locator("progress[data-quality]")
    await browser.until(
        "(n) => { const bars = [...document.querySelectorAll('progress[data-quality]')];"
        " return bars.length === n && bars.every((bar) => bar.value === 100); }",
        len(PLANNED),
        timeout=120,
    )
    assert [await bar.get_attribute("aria-label") for bar in await bars.all()] == list(PLANNED)
    await browser.until("() => document.getElementById('video-status').textContent === 'ready'")
    await browser.until("() => document.getElementById('status').textContent.includes('is ready')")
    took = await page.locator("tr[data-quality] .timing").all_text_contents()
    assert len(took) == len(PLANNED), took
    assert all(re.fullmatch(r" encoded in \d+\.\d s", t) for t in took), took

    seen: dict[str, list[float]] = await page.evaluate("window.barValues")
    assert set(seen) == set(PLANNED)
    for values in seen.values():
        assert values == sorted(values)  # never backwards
        assert values[-1] == 100
    assert any(0 < v < 100 for values in seen.values() for v in values), seen  # fed live, not just at the end
    thumbnail = page.locator("img.thumbnail")
    await thumbnail.wait_for()
    assert await thumbnail.evaluate("img => img.complete && img.naturalWidth") == 640
    assert "bigbuckbunny" in (await thumbnail.get_attribute("alt") or "")
    return str(video_id)


async def _play(browser: Browser) -> None:
    page = browser.page
    options = await page.locator("#quality option").evaluate_all("options => options.map((o) => o.value)")
    assert options == ["", *PLANNED]
    await page.get_by_label("Quality").select_option("480p")
    await browser.until(
        "() => { const v = document.getElementById('player');"
        " return v.dataset.quality === '480p' && v.readyState >= 2 && v.videoWidth === 852; }"
    )
    duration = await page.evaluate("document.getElementById('player').duration")
    assert abs(duration - 5.3) < 0.2
    # streamed from the rendition's signed link, on the page's own origin (not downloaded whole)
    source = await page.evaluate("document.getElementById('player').currentSrc")
    origin = await page.evaluate("location.origin")
    assert source.startswith(f"{origin}/v1/"), source
    assert "signature=" in source, source
    # headless Chromium plays without a user gesture only when muted
    await page.evaluate(
        "async () => { const v = document.getElementById('player'); v.muted = true; await v.play(); }"
    )
    await browser.until("() => document.getElementById('player').currentTime > 0.5", timeout=20)
    await page.evaluate("document.getElementById('player').pause()")


async def _check_pages(browser: Browser, running: Running, video_id: str, webhook_id: str) -> None:
    page = browser.page
    await browser.go(f"{running.url}/#/videos")
    row = page.locator(f"#videos tr[data-video-id='{video_id}']")
    await row.wait_for()
    assert await row.get_attribute("data-status") == "ready"
    assert "5 of 5 ready" in (await row.text_content() or "")
    await page.screenshot(path=ARTIFACTS / "web-videos.png", full_page=True)

    await row.get_by_role("link", name="bigbuckbunny.mp4").click()
    await browser.until("() => document.getElementById('timeline-state')?.textContent.includes('ended')")
    types = await page.locator("#timeline tr").evaluate_all("rows => rows.map((r) => r.dataset.type)")
    sequences = await page.locator("#timeline tr").evaluate_all(
        "rows => rows.map((r) => +r.dataset.sequence)"
    )
    assert types[0] == "video.uploaded"
    assert types[-1] == "video.ready"
    assert types.count("rendition.completed") == len(PLANNED)
    assert "rendition.progress" in types
    assert "thumbnail.completed" in types
    assert sequences == list(range(1, len(types) + 1))
    assert await page.locator("#timeline tr time").count() == len(types)

    await until(lambda: running.receiver.at("/web", "video.ready"))
    await browser.go(f"{running.url}/#/webhooks/{webhook_id}")
    delivered = page.locator("li.delivery[data-event-type='video.ready'][data-status='succeeded']")
    for _ in range(50):  # the log is written just after the receiver answers
        if await delivered.count():
            break
        await page.get_by_role("button", name="Refresh").click()
        await page.wait_for_timeout(200)
    assert await delivered.count() == 1
    assert await delivered.locator("table.attempts tbody td").nth(1).text_content() == "200"
    assert await page.locator("li.delivery[data-event-type='video.uploaded']").count() == 1
    await page.screenshot(path=ARTIFACTS / "web-webhook.png", full_page=True)


@pytest.mark.timeout(300)
async def test_upload_watch_the_bars_and_play_a_rendition_in_chromium(
    running: Running, browser: Browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.page
    await browser.go(f"{running.url}/")
    assert await page.locator("main h1").text_content() == "Paste your API key"
    await _save_key(browser, running.api_key)
    webhook_id = await _add_endpoint(browser, f"{running.receiver_url}/web")

    video_id = await _upload_and_watch(browser, running)
    await _play(browser)
    await page.screenshot(path=ARTIFACTS / "web.png", full_page=True)

    await _check_pages(browser, running, video_id, webhook_id)
    assert browser.console_errors == []


async def test_a_dropped_file_that_is_no_video_is_refused_with_the_reason(
    running: Running, browser: Browser
) -> None:
    page = browser.page
    await browser.go(f"{running.url}/")
    await _save_key(browser, running.api_key)
    dropped = await page.evaluate_handle(
        "() => { const data = new DataTransfer();"
        " data.items.add(new File(['just some text'], 'notes.txt', { type: 'text/plain' }));"
        " return data; }"
    )
    await page.dispatch_event(".dropzone", "drop", {"dataTransfer": dropped})
    alert = page.locator(".video-slot [role=alert]")
    await alert.wait_for()
    assert (await alert.text_content() or "").strip()
    await browser.until("() => document.getElementById('status').textContent.startsWith('The upload failed')")
    assert await page.locator("article.video").count() == 0
    assert await page.locator("#file").is_enabled()  # ready for another try


async def test_a_video_is_imported_from_its_url_and_a_dead_url_is_refused_with_the_reason(
    running: Running, browser: Browser, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "remote.mp4", width=320, height=240, duration=1)
    page = browser.page
    await browser.go(f"{running.url}/")
    await _save_key(browser, running.api_key)
    # a site on this machine that serves one video (the stack may import from 127.0.0.1)
    with site({"/remote.mp4": (200, {}, clip.read_bytes())}) as served:
        url = served.url
        await page.get_by_label("Qualities").fill("144p")
        await page.get_by_label("Video URL").fill(url + "/missing.mp4")
        await page.get_by_role("button", name="Import").click()
        alert = page.locator(".video-slot [role=alert]")
        await alert.wait_for()
        assert "404" in (await alert.text_content() or "")
        await browser.until(
            "() => document.getElementById('status').textContent.startsWith('The import failed')"
        )

        await page.get_by_label("Video URL").fill(url + "/remote.mp4")
        await page.get_by_role("button", name="Import").click()
        await page.locator("article.video").wait_for()
    await browser.until(
        "() => document.getElementById('upload-sent').textContent.endsWith('imported; accepted')"
    )
    video_id = await page.locator("article.video").get_attribute("data-video-id")
    async with running.client() as api:
        video = (await api.get(f"/v1/videos/{video_id}")).json()
    assert video["source"]["filename"] == "remote.mp4"
    assert [r["quality"] for r in video["renditions"]] == ["144p"]
    # Chromium logs the refused request itself (the dead URL's 422); nothing else went wrong
    assert [e for e in browser.console_errors if "status of 422" not in e] == []


async def test_a_refused_key_is_not_kept_and_a_kept_one_can_be_forgotten(
    running: Running, browser: Browser
) -> None:
    page = browser.page
    await browser.go(f"{running.url}/")
    await _save_key(browser, running.api_key)  # a fresh browser context: nothing stored yet
    assert await page.evaluate("localStorage.getItem('vidq.apiKey')") == running.api_key

    await page.get_by_role("button", name="Forget key").click()
    await browser.until("() => document.querySelector('main h1').textContent === 'Paste your API key'")
    assert await page.evaluate("localStorage.getItem('vidq.apiKey')") is None

    await page.get_by_label("API key").fill("vidq_not-a-key")
    await page.get_by_role("button", name="Save key").click()
    await browser.until("() => document.getElementById('status').textContent.includes('refused')")
    assert await page.evaluate("localStorage.getItem('vidq.apiKey')") is None
    assert await page.get_by_label("API key").is_visible()


# A page of another site, as a client's app would have it: it holds only the upload URL.
DIRECT_UPLOAD_PAGE = """<!doctype html><title>app</title><script>
window.send = async (url, bytes) => {
  const form = new FormData();
  form.append("file", new File([new Uint8Array(bytes)], "clip.mp4", { type: "video/mp4" }));
  const response = await fetch(url, { method: "POST", body: form });
  return { status: response.status, body: await response.json() };
};
</script>"""


async def _from_another_origin(
    browser: Browser, running: Running, html: str, function: str, clip: Path, **options: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Serve ``html`` from another site on this machine, make a direct upload for that origin
    (with ``options``), and call the page's ``window[function](url, bytes)`` with the upload's
    URL and the clip; what it returned, and the direct upload.

    The browser lets a loopback page reach the loopback gateway; a page it is merely handed
    counts as public and may not.
    """
    app_page = (200, {"content-type": "text/html"}, html.encode())
    with site({}, fallback=app_page) as served:
        async with running.client() as api:
            made = await api.post("/v1/uploads", json={"cors_origin": served.url, **options})
            assert made.status_code == 201, made.text
            upload: dict[str, Any] = made.json()
        await browser.page.goto(f"{served.url}/")
        answer: dict[str, Any] = await browser.page.evaluate(
            f"([url, bytes]) => window.{function}(url, bytes)", [upload["url"], list(clip.read_bytes())]
        )
    return answer, upload


async def test_a_page_of_another_origin_uploads_to_a_direct_upload_url_without_the_key(
    browser: Browser, running: Running, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "direct.mp4", width=320, height=240, duration=1.0)
    # the browser reads the answer only if the gateway allows the page's origin (CORS)
    answer, upload = await _from_another_origin(
        browser, running, DIRECT_UPLOAD_PAGE, "send", clip, metadata={"via": "app"}
    )
    assert answer["status"] == 202, (answer, browser.console_errors)
    assert answer["body"]["metadata"] == {"via": "app"}
    async with running.client() as api:
        video = await api.get(f"/v1/videos/{answer['body']['id']}")
        assert video.status_code == 200  # the client's video, made without its key
        assert (await api.get(f"/v1/uploads/{upload['id']}")).json()["status"] == "asset_created"


# The same page with a resumable upload, as a tus client does it: create at the direct upload's
# URL, then send the file in two PATCHes to the signed Location, asking where it stands between.
RESUMABLE_PAGE = """<!doctype html><title>app</title><script>
window.sendResumably = async (url, bytes) => {
  const data = new Uint8Array(bytes);
  const tus = { "Tus-Resumable": "1.0.0" };
  const octets = { ...tus, "Content-Type": "application/offset+octet-stream" };
  const created = await fetch(url, {
    method: "POST",
    headers: {
      ...tus, "Upload-Length": String(data.length), "Upload-Metadata": "filename " + btoa("page.mp4"),
    },
  });
  if (created.status !== 201) return { step: "create", status: created.status };
  const location = created.headers.get("Location");
  const half = Math.floor(data.length / 2);
  await fetch(location, {
    method: "PATCH", headers: { ...octets, "Upload-Offset": "0" }, body: data.slice(0, half),
  });
  const head = await fetch(location, { method: "HEAD", headers: tus });
  const offset = Number(head.headers.get("Upload-Offset"));
  const last = await fetch(location, {
    method: "PATCH", headers: { ...octets, "Upload-Offset": String(offset) }, body: data.slice(offset),
  });
  return { status: last.status, offset, videoId: last.headers.get("Vidq-Video-Id"), location };
};
</script>"""


async def test_a_page_of_another_origin_uploads_resumably_through_a_direct_upload_url(
    browser: Browser, running: Running, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "resumable.mp4", width=320, height=240, duration=1.0)
    # the preflights (PATCH, tus's headers) and the exposed headers (Location, Upload-Offset,
    # Vidq-Video-Id) are the browser's to enforce: each step reads what the last answered
    answer, upload = await _from_another_origin(
        browser, running, RESUMABLE_PAGE, "sendResumably", clip, qualities=["144p"]
    )
    assert answer["status"] == 204, (answer, browser.console_errors)
    assert answer["offset"] == len(clip.read_bytes()) // 2
    assert "/v1/tus/" in answer["location"]
    async with running.client() as api:
        video = (await api.get(f"/v1/videos/{answer['videoId']}")).json()
        assert video["source"]["filename"] == "page.mp4"
        assert (await api.get(f"/v1/uploads/{upload['id']}")).json()["video_id"] == answer["videoId"]


@pytest.mark.timeout(120)
async def test_the_api_docs_render_from_the_gateway_alone(running: Running, browser: Browser) -> None:
    """Swagger UI and ReDoc with every script and style from the gateway: no CDN is needed."""
    page = browser.page
    elsewhere: list[str] = []

    def note(request: Any) -> None:
        if not request.url.startswith((running.url, "data:", "blob:")):
            elsewhere.append(request.url)

    errors_before = len(browser.console_errors)
    page.on("request", note)
    try:
        await page.goto(f"{running.url}/docs")
        await page.wait_for_selector(".opblock", timeout=30_000)
        operations = await page.locator(".opblock").count()
        swagger_elsewhere, swagger_errors = list(elsewhere), browser.console_errors[errors_before:]
        await page.goto(f"{running.url}/redoc")
        await page.locator("h1", has_text="vidq").first.wait_for(timeout=30_000)
    finally:
        page.remove_listener("request", note)
        # ReDoc's "API docs by Redocly" badge is an image on Redocly's CDN, which fails offline
        del browser.console_errors[errors_before:]
    assert operations >= 20
    assert swagger_elsewhere == []
    assert swagger_errors == []
    # ReDoc renders from the gateway too: nothing else but that badge comes from elsewhere
    assert [url for url in elsewhere if not url.startswith("https://cdn.redoc.ly/redoc/logo")] == []


def _ordinal(n: int) -> str:
    return f"{n}{'th' if n % 100 // 10 == 1 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


@pytest.mark.timeout(180)
async def test_a_waiting_rendition_shows_its_place_and_moves_up_with_the_queue(
    running: Running, browser: Browser, tmp_path: Path
) -> None:
    """No event tells a new place: the page reads the video again while a rendition waits."""
    page = browser.page
    clip = make_clip(tmp_path / "waiting.mp4", width=320, height=240, duration=1.0).read_bytes()
    await running.stack.stop("transcoder")  # a queue that does not move, until the first video goes
    try:
        async with running.client() as api:
            made = [
                await api.post("/v1/videos", files={"file": ("w.mp4", clip, "video/mp4")}) for _ in range(2)
            ]
            assert [m.status_code for m in made] == [202, 202]
            ahead, waiting = (m.json() for m in made)
            place = next(r["queue_position"] for r in waiting["renditions"] if r["quality"] == "144p")
            assert place >= 2  # behind the first, and whatever else waits in the stack
            await browser.go(f"{running.url}/")
            await _save_key(browser, running.api_key)
            await page.goto(f"{running.url}/#/videos/{waiting['id']}")
            shown = (
                "(text) => document.querySelector(\"tr[data-quality='144p'] .timing\")"
                "?.textContent.trim() === text"
            )
            await browser.until(shown, f"{_ordinal(place)} in line", timeout=30)
            assert (await api.delete(f"/v1/videos/{ahead['id']}")).status_code == 204
            await browser.until(
                shown, "next in line" if place == 2 else f"{_ordinal(place - 1)} in line", timeout=30
            )
    finally:
        await running.stack.start_service("transcoder")
