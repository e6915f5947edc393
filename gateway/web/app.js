// The vidq web page: the API key panel and the hash router.
//
//   #/                 upload a video and watch it being processed
//   #/videos           the client's videos (?status= filters)
//   #/videos/<id>      one video, live, with its event timeline
//   #/webhooks         webhook endpoints; add one
//   #/webhooks/<id>    one endpoint and its delivery log
//
// Plain JavaScript modules served as they are: no framework, no build step.

import { ApiError, apiKey, request } from "./api.js";
import { announce, clearStaleStatus, errorBox, h, isAbort } from "./dom.js";
import { videosView, webhooksView, webhookView } from "./lists.js";
import { uploadView } from "./upload.js";
import { videoPage } from "./video.js";

const main = document.getElementById("main");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const keySaved = document.getElementById("key-saved");

const ROUTES = [
  { pattern: /^\/$/, nav: "upload", show: (m, context) => uploadView(main, context) },
  { pattern: /^\/videos$/, nav: "videos", show: (m, context) => videosView(main, context) },
  { pattern: /^\/videos\/([^/]+)$/, nav: "videos", show: (m, context) => videoPage(main, decodeURIComponent(m[1]), context) },
  { pattern: /^\/webhooks$/, nav: "webhooks", show: (m, context) => webhooksView(main, context) },
  { pattern: /^\/webhooks\/([^/]+)$/, nav: "webhooks", show: (m, context) => webhookView(main, decodeURIComponent(m[1]), context) },
];

let view = null; // the AbortController of the page shown: aborting it ends its streams and downloads

function needKey() {
  main.replaceChildren(
    h("h1", { id: "page-heading", tabindex: "-1" }, "Paste your API key"),
    h(
      "p",
      {},
      "This page talks to the vidq API with your key. Paste it in the API key field at the top; it stays in this browser. ",
      "A key comes from ",
      h("code", {}, "make run"),
      " or ",
      h("code", {}, "python -m gateway keys create --name NAME"),
      ".",
    ),
  );
  document.title = "vidq";
}

async function route({ focus = true } = {}) {
  view?.abort();
  view = new AbortController();
  const { signal } = view;
  clearStaleStatus();
  const [path, search = ""] = (window.location.hash.replace(/^#/, "") || "/").split("?");
  let match = null;
  const found = ROUTES.find((r) => (match = r.pattern.exec(path.startsWith("/") ? path : "/")));
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (found && link.dataset.nav === found.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (!apiKey.get()) needKey();
    else if (!found) {
      main.replaceChildren(h("h1", { id: "page-heading", tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/" }, "Upload a video")));
    } else {
      await found.show(match, { signal, query: new URLSearchParams(search) });
    }
  } catch (error) {
    if (isAbort(error) || signal.aborted) return;
    const gone = error instanceof ApiError && error.status === 404;
    main.replaceChildren(h("h1", { id: "page-heading", tabindex: "-1" }, gone ? "Not found" : "Something went wrong"), errorBox(error));
  }
  if (focus && !signal.aborted) main.querySelector("h1")?.focus();
}

async function showKey() {
  const saved = Boolean(apiKey.get());
  keyForm.hidden = saved;
  keySaved.hidden = !saved;
  if (!saved) return;
  try {
    const account = await request("/v1/account");
    document.getElementById("key-owner").textContent = account.name;
    document.getElementById("key-hint").textContent = `(${account.client_id})`;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      apiKey.forget();
      keyForm.hidden = false;
      keySaved.hidden = true;
      announce("The saved API key was refused; paste a valid one.", { error: true });
    }
  }
}

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  apiKey.set(key);
  try {
    await request("/v1/account");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      apiKey.forget();
      announce("That API key was refused.", { error: true });
      keyInput.focus();
      return;
    }
  }
  keyInput.value = "";
  announce("The API key is saved in this browser.");
  await showKey();
  await route({ focus: false });
});

document.getElementById("forget-key").addEventListener("click", async () => {
  apiKey.forget();
  announce("The API key is forgotten.");
  await showKey();
  await route({ focus: false });
  keyInput.focus();
});

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault(); // "#main" would be taken for a route
  main.focus();
});

// A file dropped next to the drop zone must not make the browser leave the page (and the upload).
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => event.preventDefault());
}

window.addEventListener("hashchange", () => route());
await showKey();
await route({ focus: false });
