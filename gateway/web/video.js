// One video, live: status, source, renditions with progress bars, thumbnail, a player with a
// quality switch over the finished renditions, and the event timeline. Fed by the SSE stream.

import { apiKey, blobUrl, follow, request, videoPath } from "./api.js";
import {
  announce,
  badge,
  byRungDescending,
  errorBox,
  formatBytes,
  formatDuration,
  h,
  heading,
  isAbort,
  pixels,
  time,
} from "./dom.js";

// Without a signed link, played without asking only while it is cheap to download whole (see
// blobUrl in api.js); a signed link streams, with Range requests, whatever its size.
const AUTOLOAD_MAX_BYTES = 64 * 1000 * 1000;
// Events older than this when they arrive are history being replayed: shown, not announced.
const ANNOUNCE_WINDOW_MS = 5000;
// How often a video with a rendition still queued is read again, for the rendition's place.
const PLACES_EVERY_MS = 10000;

/** Its wait, its work left or the work it took: "3rd in line", "about 12.0 s left", "encoded in 4.2 s". */
export function timing(rendition) {
  if (rendition.status === "queued" && rendition.queue_position) {
    return rendition.queue_position === 1 ? "next in line" : `${ordinal(rendition.queue_position)} in line`;
  }
  if (rendition.status === "processing" && rendition.eta_s !== null && rendition.eta_s !== undefined) {
    return `about ${formatDuration(rendition.eta_s)} left`;
  }
  if (rendition.status === "ready" && rendition.encode_seconds !== null && rendition.encode_seconds !== undefined) {
    return `encoded in ${formatDuration(rendition.encode_seconds)}`;
  }
  return "";
}

function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] ?? "th");
  return `${n}${suffix}`;
}

function describe(event) {
  const data = event.data.data ?? {};
  switch (event.type) {
    case "video.uploaded":
      return `${pixels(data.source?.width, data.source?.height)}, ${formatDuration(data.source?.duration_s)}; ` +
        `planned ${(data.renditions ?? []).map((r) => r.quality).join(", ")}`;
    case "rendition.progress":
      return `${data.quality} ${Math.round(data.progress ?? 0)} %`;
    case "rendition.completed":
      return `${data.quality} ready, ${pixels(data.width, data.height)}, ${formatBytes(data.size_bytes)}`;
    case "rendition.failed":
      return `${data.quality} failed: ${data.error ?? "unknown error"}`;
    case "thumbnail.completed":
      return `widths ${(data.thumbnail?.widths ?? []).join(", ")}`;
    case "thumbnail.failed":
      return `thumbnail failed: ${data.thumbnail?.error ?? "unknown error"}`;
    case "video.ready":
      return "every rendition and the thumbnail are ready";
    case "video.failed":
      return data.error ?? "failed";
    default:
      return "";
  }
}

/** The status to show: a queued video whose parts have started is, for a person, processing. */
function shownStatus(video, renditions) {
  if (video.status !== "queued") return video.status;
  const started = [...renditions.values(), video.thumbnail].some((part) => part && part.status !== "queued");
  return started ? "processing" : "queued";
}

/**
 * The panel of ``video`` (a Video resource). ``level`` is the level of its title heading;
 * ``signal`` ends the live stream and downloads; blob: URLs are revoked on abort.
 */
export function videoPanel(video, { level = 2, signal }) {
  const id = video.id;
  const state = { video, renditions: new Map(), last: 0, following: false, refreshing: false, seen: new Set() };
  const blobs = new Map();
  signal.addEventListener("abort", () => blobs.forEach((url) => URL.revokeObjectURL(url)), { once: true });

  const title = heading(level, { class: "video-title", tabindex: level === 1 ? "-1" : undefined });
  const statusBadge = badge(video.status, { id: "video-status" });
  const errorLine = h("p", { class: "error", hidden: true });
  const sourceList = h("dl", { class: "facts" });
  const renditionRows = h("tbody");
  const rows = new Map();

  const thumbImage = h("img", { class: "thumbnail", alt: "", hidden: true, width: 320, height: 180 });
  const thumbNote = h("p", { class: "hint" }, "The poster frame appears when it is ready.");

  const qualitySelect = h("select", { id: "quality", name: "quality" }, h("option", { value: "" }, "Choose…"));
  const player = h("video", { id: "player", controls: true, playsinline: true, preload: "auto", width: 640, height: 360 });
  const playerNote = h("p", { class: "hint", id: "player-note" }, "The player appears when a rendition is ready.");
  const playerBox = h(
    "div",
    { class: "player", hidden: true },
    h("p", { class: "quality-switch" }, h("label", { for: "quality" }, "Quality"), " ", qualitySelect),
    player,
  );

  const timeline = h("tbody", { id: "timeline" });

  const sub = level + 1;
  const panel = h(
    "article",
    { class: "video", "data-video-id": id, "aria-labelledby": "video-title" },
    h(
      "header",
      { class: "video-head" },
      title,
      h("p", { class: "video-state" }, "Status: ", statusBadge, " ", h("code", { class: "id" }, id)),
      errorLine,
    ),
    sourceList,
    h(
      "section",
      { "aria-labelledby": "renditions-heading" },
      heading(sub, { id: "renditions-heading" }, "Renditions"),
      h(
        "table",
        { class: "renditions" },
        h("thead", {}, h("tr", {}, ["Quality", "Progress", "Status", "Size"].map((c) => h("th", { scope: "col" }, c)))),
        renditionRows,
      ),
    ),
    h(
      "div",
      { class: "media" },
      h(
        "section",
        { "aria-labelledby": "player-heading", class: "player-section" },
        heading(sub, { id: "player-heading" }, "Player"),
        playerNote,
        playerBox,
      ),
      h(
        "section",
        { "aria-labelledby": "thumbnail-heading", class: "thumbnail-section" },
        heading(sub, { id: "thumbnail-heading" }, "Thumbnail"),
        thumbNote,
        thumbImage,
      ),
    ),
    h(
      "section",
      { "aria-labelledby": "timeline-heading" },
      heading(sub, { id: "timeline-heading" }, "Event timeline"),
      h(
        "table",
        { class: "timeline" },
        h("thead", {}, h("tr", {}, ["#", "Time", "Event", "Details"].map((c) => h("th", { scope: "col", class: c === "#" ? "num" : null }, c)))),
        timeline,
      ),
      h("p", { class: "hint", id: "timeline-state" }, "Connecting to the event stream…"),
    ),
  );
  title.id = "video-title";

  function showSource(source) {
    const facts = [
      ["Picture", pixels(source.width, source.height)],
      ["Duration", formatDuration(source.duration_s)],
      ["Size", formatBytes(source.size_bytes)],
      ["Codecs", [source.video_codec, source.audio_codec ?? "no audio"].join(" + ")],
    ];
    sourceList.replaceChildren(...facts.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
  }

  function renditionRow(quality) {
    let row = rows.get(quality);
    if (row) return row;
    const bar = h("progress", { max: 100, value: 0, "aria-label": quality, "data-quality": quality });
    row = {
      bar,
      percent: h("span", { class: "percent" }, "0 %"),
      status: h("td"),
      size: h("td"),
      tr: null,
    };
    row.tr = h(
      "tr",
      { "data-quality": quality },
      h("th", { scope: "row" }, quality),
      h("td", { class: "progress-cell" }, bar, " ", row.percent),
      row.status,
      row.size,
    );
    rows.set(quality, row);
    // keep the ladder in order, highest first, whatever order the events come in
    const after = [...rows.keys()].sort(byRungDescending).indexOf(quality);
    renditionRows.insertBefore(row.tr, renditionRows.children[after] ?? null);
    return row;
  }

  function showRendition(rendition) {
    state.renditions.set(rendition.quality, rendition);
    const row = renditionRow(rendition.quality);
    // a queued rendition's place as the video was last read: an event's copy tells the place it
    // had at upload (events come when this video changes, not when others ahead of it start)
    rendition = { ...rendition, queue_position: places.get(rendition.quality) ?? null };
    const percent = rendition.status === "ready" ? 100 : Math.floor(rendition.progress ?? 0);
    row.bar.value = percent;
    row.percent.textContent = `${percent} %`;
    const retry =
      rendition.status === "failed"
        ? h("button", { type: "button", class: "small", onclick: () => retryRendition(rendition.quality) }, "Retry")
        : null;
    const when = timing(rendition);
    row.status.replaceChildren(
      badge(rendition.status),
      when ? h("span", { class: "timing" }, ` ${when}`) : "",
      rendition.error ? h("span", { class: "error" }, ` ${rendition.error}`) : "",
      retry ? " " : "",
      retry ?? "",
    );
    row.size.textContent = rendition.status === "ready"
      ? `${pixels(rendition.width, rendition.height)}, ${formatBytes(rendition.size_bytes)}`
      : pixels(rendition.width, rendition.height);
    if (rendition.status === "ready") offerQuality(rendition);
  }

  function showStatus() {
    const status = shownStatus(state.video, state.renditions);
    statusBadge.textContent = status;
    statusBadge.dataset.status = status;
    errorLine.hidden = !state.video.error;
    errorLine.textContent = state.video.error ?? "";
  }

  const places = new Map();
  function notePlaces(read) {
    places.clear();
    for (const r of read.renditions ?? []) if (r.queue_position) places.set(r.quality, r.queue_position);
  }

  /** While a rendition waits, read the video now and then: the only way to learn its new place. */
  async function refreshPlaces() {
    if (state.refreshing) return;
    state.refreshing = true;
    try {
      while (!signal.aborted && [...state.renditions.values()].some((r) => r.status === "queued")) {
        await new Promise((resolve) => setTimeout(resolve, PLACES_EVERY_MS));
        if (signal.aborted) return;
        try {
          notePlaces(await request(videoPath(id), { signal }));
        } catch (error) {
          if (isAbort(error)) return;
          continue; // the next turn tries again; the places shown stay as they were
        }
        for (const rendition of state.renditions.values()) if (rendition.status === "queued") showRendition(rendition);
      }
    } finally {
      state.refreshing = false;
    }
  }

  function showVideo(next) {
    state.video = next;
    title.textContent = next.source?.filename ?? next.id;
    showSource(next.source);
    for (const rendition of next.renditions) showRendition(rendition);
    showThumbnail(next.thumbnail);
    showStatus();
    if (next.status === "ready") chooseDefaultQuality();
  }

  async function showThumbnail(thumbnail) {
    if (thumbnail.status !== "ready") {
      if (thumbnail.status === "failed") {
        const retry = h("button", { type: "button", class: "small", onclick: retryThumbnail }, "Retry");
        thumbNote.replaceChildren(`The thumbnail failed: ${thumbnail.error ?? "unknown error"} `, retry);
      } else {
        thumbNote.textContent = `Thumbnail ${thumbnail.status}…`;
      }
      return;
    }
    if (blobs.has("thumbnail")) return;
    blobs.set("thumbnail", "");
    try {
      const url = await blobUrl(`${videoPath(id, "thumbnail")}?width=640`, { signal });
      blobs.set("thumbnail", url);
      thumbImage.src = url;
      thumbImage.alt = `Poster frame of ${state.video.source?.filename ?? id}`;
      thumbImage.hidden = false;
      thumbNote.textContent = `Poster frame (widths ${thumbnail.widths.join(", ")}).`;
      if (!player.poster) player.poster = url;
    } catch (error) {
      blobs.delete("thumbnail");
      if (!isAbort(error)) thumbNote.replaceChildren(errorBox(error));
    }
  }

  function offerQuality(rendition) {
    if (qualitySelect.querySelector(`option[value="${CSS.escape(rendition.quality)}"]`)) return;
    const option = h("option", { value: rendition.quality }, `${rendition.quality} (${pixels(rendition.width, rendition.height)})`);
    const later = [...qualitySelect.options].find((o) => o.value && byRungDescending(o.value, rendition.quality) > 0);
    qualitySelect.insertBefore(option, later ?? null);
    playerBox.hidden = false;
    if (!qualitySelect.value) playerNote.textContent = "Choose a quality to play.";
  }

  function chooseDefaultQuality() {
    if (qualitySelect.value || state.loading) return;
    const ready = [...state.renditions.values()]
      .filter((r) => r.status === "ready" && (r.signed_url || (r.size_bytes ?? 0) <= AUTOLOAD_MAX_BYTES))
      .sort((a, b) => byRungDescending(a.quality, b.quality));
    if (ready.length) {
      qualitySelect.value = ready[0].quality;
      play(ready[0].quality);
    }
  }

  // A signed link streams (Range requests); it is read fresh, since the links in replayed events
  // may have expired, and used as a path on this page's origin (the page may be reached by
  // another name than the gateway's public URL). Without one, the file is downloaded whole.
  async function sourceOf(quality) {
    const fresh = await request(videoPath(id), { signal });
    const signed = fresh.renditions.find((r) => r.quality === quality)?.signed_url;
    if (signed) {
      const link = new URL(signed);
      return link.pathname + link.search;
    }
    let url = blobs.get(quality);
    if (!url) {
      url = await blobUrl(videoPath(id, "renditions", quality), { signal });
      blobs.set(quality, url);
    }
    return url;
  }

  let loadToken = 0;
  async function play(quality) {
    const token = ++loadToken;
    state.loading = true;
    const resumeAt = player.currentTime || 0;
    const wasPlaying = !player.paused && !player.ended;
    playerNote.textContent = `Loading ${quality}…`;
    try {
      const url = await sourceOf(quality);
      if (token !== loadToken) return;
      player.addEventListener(
        "loadedmetadata",
        () => {
          if (resumeAt) player.currentTime = Math.min(resumeAt, player.duration || resumeAt);
          if (wasPlaying) player.play().catch(() => {});
        },
        { once: true },
      );
      player.src = url;
      player.dataset.quality = quality;
      const rendition = state.renditions.get(quality);
      playerNote.textContent = `Playing ${quality}: ${pixels(rendition?.width, rendition?.height)}, ${formatBytes(rendition?.size_bytes)}.`;
    } catch (error) {
      if (!isAbort(error)) playerNote.replaceChildren(errorBox(error));
    } finally {
      if (token === loadToken) state.loading = false;
    }
  }
  qualitySelect.addEventListener("change", () => {
    if (qualitySelect.value) play(qualitySelect.value);
  });

  function addToTimeline(event) {
    const sequence = event.data.sequence ?? Number(event.id);
    if (state.seen.has(sequence)) return;
    state.seen.add(sequence);
    const row = h(
      "tr",
      { "data-type": event.type, "data-sequence": sequence },
      h("td", { class: "num" }, String(sequence)),
      h("td", {}, time(event.data.timestamp, { precise: true })),
      h("td", {}, h("code", {}, event.type)),
      h("td", {}, describe(event)),
    );
    // events arrive in order; a resumed stream may only repeat, which `seen` drops
    timeline.append(row);
  }

  function announceLive(event) {
    const age = Date.now() - Date.parse(event.data.timestamp);
    if (!(age < ANNOUNCE_WINDOW_MS)) return;
    const data = event.data.data ?? {};
    const name = state.video.source?.filename ?? id;
    const messages = {
      "rendition.completed": `${data.quality} is ready.`,
      "rendition.failed": `${data.quality} failed.`,
      "thumbnail.completed": "The thumbnail is ready.",
      "video.ready": `${name} is ready: every rendition and the thumbnail.`,
      "video.failed": `${name} failed: ${data.error ?? ""}`,
      "video.canceled": `${name} was canceled.`,
      "video.deleted": `${name} was deleted.`,
    };
    if (messages[event.type]) announce(messages[event.type], { error: event.type.endsWith("failed") });
  }

  function onEvent(event) {
    addToTimeline(event);
    const data = event.data.data;
    if (data && Array.isArray(data.renditions)) showVideo(data);
    else if (data && data.quality) {
      showRendition(data);
      showStatus();
    }
    announceLive(event);
  }

  async function startFollowing() {
    if (state.following) return;
    state.following = true;
    const note = panel.querySelector("#timeline-state");
    note.textContent = "Live: new events appear as they happen.";
    try {
      state.last = await follow(id, onEvent, { after: state.last, signal });
      state.last = Math.max(state.last, ...state.seen);
      note.textContent = `The stream ended after ${state.video.status === "ready" ? "video.ready" : "the final event"}.`;
    } catch (error) {
      if (!isAbort(error)) note.replaceChildren(errorBox(error));
    } finally {
      state.following = false;
    }
  }

  async function retryRendition(quality) {
    try {
      const read = await request(`${videoPath(id, "renditions", quality)}/retry`, { method: "POST", signal });
      notePlaces(read);
      showVideo(read);
      announce(`${quality} queued again.`);
      startFollowing();
      refreshPlaces();
    } catch (error) {
      if (!isAbort(error)) announce(errorBox(error).textContent, { error: true });
    }
  }

  async function retryThumbnail() {
    try {
      showVideo(await request(`${videoPath(id, "thumbnail")}/retry`, { method: "POST", signal }));
      announce("The thumbnail is queued again.");
      startFollowing();
    } catch (error) {
      if (!isAbort(error)) announce(errorBox(error).textContent, { error: true });
    }
  }

  notePlaces(video);
  showVideo(video);
  if (apiKey.get()) {
    startFollowing();
    refreshPlaces();
  }
  return panel;
}

/** A video's own page: its panel as the page's main content, with delete. */
export async function videoPage(main, videoId, { signal }) {
  main.replaceChildren(h("p", { class: "crumbs" }, h("a", { href: "#/videos" }, "← Videos")), h("p", {}, "Loading…"));
  const video = await request(videoPath(videoId), { signal });
  const panel = videoPanel(video, { level: 1, signal });
  const remove = h("button", { type: "button", class: "danger" }, "Delete video");
  remove.addEventListener("click", async () => {
    if (!window.confirm(`Delete ${video.source?.filename ?? videoId}? Work in flight is canceled and its files are removed.`)) return;
    try {
      await request(videoPath(videoId), { method: "DELETE" });
      announce("The video was deleted.");
      window.location.hash = "#/videos";
    } catch (error) {
      announce(error.message, { error: true });
    }
  });
  main.replaceChildren(h("p", { class: "crumbs" }, h("a", { href: "#/videos" }, "← Videos")), panel, h("p", { class: "actions" }, remove));
  document.title = `${video.source?.filename ?? videoId} — vidq`;
  return panel;
}
