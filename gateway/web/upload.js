// The upload page: a drop zone around a regular file input, or a video's URL to import, options,
// a progress bar of the bytes sent (of the download, without a measure), then the live panel.
//
// An upload outlives the page it started on: moving to another page does not cancel it (only
// the Cancel button does), and coming back shows it again.

import { importVideo, upload } from "./api.js";
import { announce, errorBox, formatBytes, h, isAbort } from "./dom.js";
import { videoPanel } from "./video.js";

/** The upload (or import) in flight or the last one finished: {file, url, sent, total, video, error, abort}. */
let current = null;
const listeners = new Set();
const notify = () => listeners.forEach((listener) => listener(current));

window.addEventListener("beforeunload", (event) => {
  if (current && !current.video && !current.error) event.preventDefault(); // leaving would cancel it
});

function start(file, fields) {
  const controller = new AbortController();
  current = { file, sent: 0, total: file.size, video: null, error: null, abort: () => controller.abort() };
  const mine = current;
  announce(`Uploading ${file.name} (${formatBytes(file.size)})…`);
  notify();
  upload(file, fields, {
    signal: controller.signal,
    onProgress: (sent, total) => {
      Object.assign(mine, { sent, total });
      notify();
    },
  }).then(
    (video) => {
      mine.video = video;
      announce(`${file.name} uploaded: ${video.renditions.map((r) => r.quality).join(", ")} planned.`);
      notify();
    },
    (error) => {
      mine.error = error;
      announce(isAbort(error) ? "The upload was canceled." : `The upload failed: ${error.message}`, { error: !isAbort(error) });
      notify();
    },
  );
}

function startImport(url, fields) {
  const controller = new AbortController();
  current = { file: null, url, sent: 0, total: 0, video: null, error: null, abort: () => controller.abort() };
  const mine = current;
  announce(`Importing ${url}…`);
  notify();
  importVideo(url, fields, { signal: controller.signal }).then(
    (video) => {
      mine.video = video;
      announce(`${url} imported: ${video.renditions.map((r) => r.quality).join(", ")} planned.`);
      notify();
    },
    (error) => {
      mine.error = error;
      announce(isAbort(error) ? "The import was canceled." : `The import failed: ${error.message}`, { error: !isAbort(error) });
      notify();
    },
  );
}

export function uploadView(main, { signal, level = 1 }) {
  const fileInput = h("input", {
    type: "file",
    id: "file",
    name: "file",
    accept: "video/*,.mp4,.m4v,.mov,.mkv,.webm,.avi",
    "aria-describedby": "drop-help",
  });
  const qualities = h("input", {
    id: "qualities",
    name: "qualities",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "every rung that fits",
    "aria-describedby": "qualities-help",
  });
  const email = h("input", { id: "notify-email", name: "notify_email", type: "email", autocomplete: "email" });
  const dropzone = h(
    "div",
    { class: "dropzone" },
    h("p", { class: "drop-title", id: "drop-help" }, "Drop a video file here, or choose one. The upload starts at once."),
    h("p", { class: "drop-input" }, h("label", { for: "file" }, "Video file"), " ", fileInput),
  );
  const urlInput = h("input", {
    type: "url",
    id: "import-url",
    name: "url",
    placeholder: "https://…/clip.mp4",
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "import-help",
  });
  const importButton = h("button", { type: "submit" }, "Import");
  const importer = h(
    "form",
    { class: "import-form", "aria-labelledby": "import-help" },
    h("p", { id: "import-help" }, "Or give the URL of a video on the web: the gateway downloads it."),
    h("p", {}, h("label", { for: "import-url" }, "Video URL"), " ", urlInput, " ", importButton),
  );
  const options = h(
    "fieldset",
    { class: "options" },
    h("legend", {}, "Options (optional, set them before choosing the file)"),
    h(
      "p",
      {},
      h("label", { for: "qualities" }, "Qualities"),
      qualities,
      h("span", { class: "hint", id: "qualities-help" }, "Comma-separated rungs, e.g. 720p,360p; rungs above the source are skipped."),
    ),
    h("p", {}, h("label", { for: "notify-email" }, "Email me when it is done"), email),
  );

  const bar = h("progress", { id: "upload-progress", max: 1, value: 0, "aria-label": "Upload" });
  const sent = h("span", { id: "upload-sent" });
  const cancel = h("button", { type: "button", class: "small" }, "Cancel upload");
  cancel.addEventListener("click", () => current?.abort());
  const progressBox = h(
    "section",
    { class: "upload-progress", "aria-labelledby": "upload-heading", hidden: true },
    h(`h${level + 1}`, { id: "upload-heading" }, "Upload"),
    h("p", { class: "bar-line" }, bar, " ", sent, " ", cancel),
  );
  const slot = h("div", { class: "video-slot" });

  const form = h("form", { class: "upload-form", "aria-labelledby": "page-heading" }, options, dropzone);
  form.addEventListener("submit", (event) => event.preventDefault());
  main.replaceChildren(
    h(`h${level}`, { id: "page-heading", tabindex: "-1" }, "Upload a video"),
    form,
    importer,
    progressBox,
    slot,
  );
  document.title = "Upload — vidq";

  const busy = () => {
    if (current && !current.video && !current.error) {
      announce("An upload is already running; cancel it first.", { error: true });
      return true;
    }
    return false;
  };
  const fields = () => ({ qualities: qualities.value.trim(), notify_email: email.value.trim() });
  const choose = (file) => {
    if (!file || busy()) return;
    start(file, fields());
  };
  importer.addEventListener("submit", (event) => {
    event.preventDefault();
    const url = urlInput.value.trim();
    if (!url || busy()) return;
    startImport(url, fields());
  });
  fileInput.addEventListener("change", () => {
    choose(fileInput.files?.[0]);
    fileInput.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("is-over");
    });
  }
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("is-over"));
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropzone.classList.remove("is-over");
    choose(event.dataTransfer?.files?.[0]);
  });

  let panelFor = null;
  let panelAbort = null;
  const render = (state) => {
    progressBox.hidden = !state;
    if (!state) return;
    const running = !state.video && !state.error;
    bar.max = state.total || 1;
    if (state.url && running) bar.removeAttribute("value"); // a download of no known length: indeterminate
    else bar.value = state.video ? bar.max : state.sent;
    const whole = state.sent >= state.total && running;
    sent.textContent = state.error
      ? (isAbort(state.error) ? "canceled" : "failed")
      : state.url
        ? `${state.url}: ${state.video ? "imported; accepted" : "the gateway is downloading and checking it…"}`
        : `${state.file.name}: ${formatBytes(state.video ? state.total : state.sent)} of ${formatBytes(state.total)} sent` +
          (whole ? "; the gateway is checking the file…" : state.video ? "; accepted" : "");
    cancel.hidden = !running;
    fileInput.disabled = running;
    urlInput.disabled = importButton.disabled = running;
    if (state.error && !isAbort(state.error)) slot.replaceChildren(errorBox(state.error));
    else if (state.error) slot.replaceChildren();
    if (state.video && panelFor !== state.video.id) {
      panelFor = state.video.id;
      panelAbort?.abort();
      panelAbort = new AbortController();
      signal.addEventListener("abort", () => panelAbort.abort(), { once: true });
      slot.replaceChildren(
        videoPanel(state.video, { level: level + 1, signal: panelAbort.signal }),
        h("p", {}, h("a", { href: `#/videos/${encodeURIComponent(state.video.id)}` }, "This video's own page")),
      );
    } else if (!state.video) {
      panelFor = null;
      panelAbort?.abort();
      if (!state.error) slot.replaceChildren();
    }
  };
  listeners.add(render);
  signal.addEventListener("abort", () => listeners.delete(render), { once: true });
  render(current);
}
