// The /v1 API from the browser: the stored key, JSON calls, resumable uploads (tus) with
// progress, and the server-sent event stream read with fetch().
//
// Every /v1 route wants "Authorization: Bearer <key>". EventSource, <video src> and <img src>
// cannot send that header, so the event stream is read through fetch() and a stream reader, and
// media are downloaded with fetch() and shown from blob: URLs. The key never goes into a URL.

const KEY_ITEM = "vidq.apiKey";
const TERMINAL_EVENTS = new Set(["video.ready", "video.failed", "video.canceled", "video.deleted"]);
export const TERMINAL_STATUSES = new Set(["ready", "failed", "canceled"]);

export const apiKey = {
  get: () => localStorage.getItem(KEY_ITEM) ?? "",
  set: (value) => localStorage.setItem(KEY_ITEM, value),
  forget: () => localStorage.removeItem(KEY_ITEM),
};

/** A failed call: ``status`` is the HTTP status (0 for a network error), ``problem`` the RFC 9457 body. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || (status ? `HTTP ${status}` : "network error"));
    this.name = "ApiError";
    this.status = status;
    this.problem = problem ?? null;
  }
}

async function failure(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // not a problem document (a proxy's error page, say): the status alone has to do
  }
  return new ApiError(response.status, problem);
}

const authorization = () => ({ Authorization: `Bearer ${apiKey.get()}` });

/** A JSON call; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function request(path, { method = "GET", body, signal } = {}) {
  const headers = { ...authorization(), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

export const videoPath = (videoId, ...rest) => ["/v1/videos", encodeURIComponent(videoId), ...rest].join("/");

/**
 * Download a file with the key and return a blob: URL for <video>/<img> (revoke it when done).
 *
 * The whole file is held in memory: right for thumbnails, and for a rendition only when the
 * gateway gives no signed link (a rendition's ``signed_url`` streams, with Range requests).
 */
export async function blobUrl(path, { signal } = {}) {
  const response = await fetch(path, { headers: authorization(), signal });
  if (!response.ok) throw await failure(response);
  return URL.createObjectURL(await response.blob());
}

const TUS = { "Tus-Resumable": "1.0.0" };
/** Bytes per PATCH: a broken connection costs at most this much sent again. */
const CHUNK = 8 * 1024 * 1024;
/** Failures in a row (network, 5xx, an offset that moved) before an upload gives up. */
const ATTEMPTS = 8;

const base64 = (text) => btoa(Array.from(new TextEncoder().encode(text), (byte) => String.fromCharCode(byte)).join(""));

function problemOf(xhr) {
  try {
    return JSON.parse(xhr.responseText);
  } catch {
    return null; // a HEAD's answer, or not a problem document
  }
}

/** One request with XMLHttpRequest, the one browser API that reports upload progress. */
function send(method, url, { headers = {}, body = null, onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries({ ...authorization(), Accept: "application/json", ...headers })) {
      xhr.setRequestHeader(name, value);
    }
    const cancel = () => xhr.abort();
    const settle = (outcome) => {
      signal?.removeEventListener("abort", cancel);
      outcome();
    };
    if (onProgress) xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded));
    xhr.addEventListener("load", () => settle(() => resolve(xhr)));
    xhr.addEventListener("error", () =>
      settle(() => reject(new ApiError(0, { detail: "the upload failed: network error" }))),
    );
    xhr.addEventListener("abort", () => settle(() => reject(new DOMException("upload canceled", "AbortError"))));
    if (signal?.aborted) {
      reject(new DOMException("upload canceled", "AbortError"));
      return;
    }
    signal?.addEventListener("abort", cancel, { once: true });
    xhr.send(body);
  });
}

/**
 * Upload a file resumably (tus, /v1/tus), 8 MiB a PATCH: after a failure (the network, a 5xx)
 * it asks the gateway where the file stands (HEAD) and sends only the rest, so a dropped
 * connection costs one piece, not the upload. ``onProgress(sentBytes, totalBytes)``; resolves
 * to the video. Canceled, the upload is ended on the gateway too.
 */
export async function upload(file, fields, { onProgress, signal } = {}) {
  const metadata = Object.entries({ filename: file.name, ...fields })
    .filter(([, value]) => value)
    .map(([name, value]) => `${name} ${base64(value)}`)
    .join(",");
  const creation = { ...TUS, "Upload-Length": String(file.size), "Upload-Metadata": metadata };
  const created = await send("POST", "/v1/tus", { headers: creation, signal });
  if (created.status !== 201) throw new ApiError(created.status, problemOf(created));
  const location = created.getResponseHeader("Location");
  const videoId = created.getResponseHeader("Vidq-Video-Id");
  let offset = 0;
  let failures = 0;
  let resync = false;
  try {
    for (;;) {
      try {
        if (resync) {
          const head = await send("HEAD", location, { headers: TUS, signal });
          if (head.status !== 200) throw new ApiError(head.status, null);
          offset = Number(head.getResponseHeader("Upload-Offset"));
          resync = false;
        }
        if (offset >= file.size) break;
        const from = offset;
        const patched = await send("PATCH", location, {
          headers: { ...TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(from) },
          body: file.slice(from, Math.min(from + CHUNK, file.size)),
          onProgress: (loaded) => onProgress?.(from + loaded, file.size),
          signal,
        });
        if (patched.status !== 204) throw new ApiError(patched.status, problemOf(patched));
        offset = Number(patched.getResponseHeader("Upload-Offset"));
        failures = 0;
        onProgress?.(offset, file.size);
      } catch (error) {
        const again = error instanceof ApiError && (error.status === 0 || error.status >= 500 || [408, 409, 423].includes(error.status));
        failures += 1;
        if (!again || failures > ATTEMPTS) throw error;
        await sleep(Math.min(2 ** failures, 30) * 1000, signal);
        resync = true;
      }
    }
  } catch (error) {
    if (error?.name === "AbortError") {
      fetch(location, { method: "DELETE", headers: { ...authorization(), ...TUS }, keepalive: true }).catch(() => {});
    }
    throw error;
  }
  return request(videoPath(videoId), { signal });
}

/** Import the video at ``url`` (the gateway downloads and checks it within the request). */
export function importVideo(url, fields, { signal } = {}) {
  const body = { url };
  for (const [name, value] of Object.entries(fields)) {
    if (value) body[name] = value;
  }
  return request("/v1/videos", { method: "POST", body, signal });
}

/** Parse a text/event-stream body into {id, type, data} events (data parsed as JSON). */
async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { id: "", type: "", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      // A "\r" at the very end may be the first half of "\r\n": keep it for the next chunk.
      const text = buffer + value;
      const held = text.endsWith("\r") ? 1 : 0;
      const lines = text.slice(0, text.length - held).split(/\r\n|\r|\n/);
      buffer = lines.pop() + (held ? "\r" : "");
      for (const line of lines) {
        if (line === "") {
          if (event.data.length) {
            yield { id: event.id, type: event.type || "message", data: JSON.parse(event.data.join("\n")) };
          }
          event = { id: event.id, type: "", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let fieldValue = colon < 0 ? "" : line.slice(colon + 1);
        if (fieldValue.startsWith(" ")) fieldValue = fieldValue.slice(1);
        if (field === "data") event.data.push(fieldValue);
        else if (field === "id") event.id = fieldValue;
        else if (field === "event") event.type = fieldValue;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason ?? new DOMException("aborted", "AbortError"));
      },
      { once: true },
    );
  });
}

/**
 * Follow a video's events (GET /v1/videos/{id}/events): the history after ``after`` first,
 * then live ones, calling ``onEvent`` for each, until a terminal event. A dropped connection
 * is resumed from the last sequence seen (the stream's ``id``), with a growing pause.
 * Resolves to the last sequence; rejects on abort or a 4xx answer.
 */
export async function follow(videoId, onEvent, { after = 0, signal } = {}) {
  let last = after;
  let lastType = "";
  let failures = 0;
  for (;;) {
    let received = 0;
    try {
      const response = await fetch(`${videoPath(videoId, "events")}?after=${last}`, {
        headers: { ...authorization(), Accept: "text/event-stream" },
        cache: "no-store",
        signal,
      });
      if (!response.ok) throw await failure(response);
      // 204: a finished video whose events were all seen already (no body to read)
      const events = response.status === 204 ? [] : readEvents(response.body);
      for await (const event of events) {
        received += 1;
        failures = 0;
        last = Number(event.id) || last;
        lastType = event.type;
        onEvent(event);
      }
      if (TERMINAL_EVENTS.has(lastType)) return last;
      if (!received) {
        // The server ended at once with nothing new: the video is already finished.
        const video = await request(videoPath(videoId), { signal });
        if (TERMINAL_STATUSES.has(video.status)) return last;
      }
    } catch (error) {
      if (signal?.aborted || (error instanceof ApiError && error.status >= 400 && error.status < 500)) {
        throw error;
      }
    }
    failures += 1;
    await sleep(Math.min(500 * 2 ** failures, 15000), signal);
  }
}
