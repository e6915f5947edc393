// Building elements, formatting values and announcing status changes.
//
// Every piece of text from the API goes into the page through text nodes (never innerHTML),
// so a file name or an error message cannot inject markup next to the stored API key.

/** An element: h("a", { href: "#/" }, "text", child, …). false/null/undefined are skipped. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  element.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

/** A heading of the given level (1–6). */
export const heading = (level, attrs, ...children) => h(`h${Math.min(6, Math.max(1, level))}`, attrs, ...children);

/** A status as a badge: the word itself, coloured by status (the colour is never the only cue). */
export const badge = (status, attrs = {}) => h("span", { class: "badge", "data-status": status, ...attrs }, status);

const UNITS = ["B", "kB", "MB", "GB", "TB"];

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit > 0 && value < 10 ? 1 : 0)} ${UNITS[unit]}`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  const [hours, minutes, secs] = [Math.floor(whole / 3600), Math.floor((whole % 3600) / 60), whole % 60];
  return hours ? `${hours} h ${minutes} min` : `${minutes} min ${secs} s`;
}

const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const PRECISE_TIME = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  fractionalSecondDigits: 3,
});

/** A <time> element; ``precise`` shows the time of day to the millisecond (event timelines). */
export function time(iso, { precise = false } = {}) {
  if (!iso) return h("span", {}, "—");
  const date = new Date(iso);
  return h("time", { datetime: iso, title: date.toISOString() }, (precise ? PRECISE_TIME : DATE_TIME).format(date));
}

export const pixels = (width, height) => (width && height ? `${width}×${height}` : "—");

/** Rungs are compared by their number: 2160p first, 144p last. */
export const byRungDescending = (a, b) => parseInt(b, 10) - parseInt(a, 10);

let announceTimer = 0;
let announcedAt = 0;

/** Say something in the status line (a polite live region) and show it there. */
export function announce(message, { error = false } = {}) {
  const line = document.getElementById("status");
  if (!line) return;
  // Clearing first and writing on the next tick makes screen readers repeat an identical message.
  line.textContent = "";
  line.classList.toggle("is-error", error);
  clearTimeout(announceTimer);
  announcedAt = Date.now();
  announceTimer = setTimeout(() => {
    line.textContent = message;
  }, 50);
}

/** On a new page, drop a message said more than ``ms`` ago (it was about the page left). */
export function clearStaleStatus(ms = 3000) {
  const line = document.getElementById("status");
  if (line && Date.now() - announcedAt > ms) {
    line.textContent = "";
    line.classList.remove("is-error");
  }
}

/** An error as a paragraph with role="alert" (problem documents carry a human ``detail``). */
export const errorBox = (error) => h("p", { class: "error", role: "alert" }, messageOf(error));

export function messageOf(error) {
  if (error?.status === 401) return "The API key was refused. Paste a valid key above.";
  return error?.message || String(error);
}

export const isAbort = (error) => error?.name === "AbortError";
