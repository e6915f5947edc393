// The list of the client's videos, the webhook endpoints, and one endpoint's delivery log.

import { ApiError, request } from "./api.js";
import { announce, badge, errorBox, formatDuration, h, isAbort, pixels, time } from "./dom.js";

const STATUSES = ["queued", "processing", "ready", "failed", "canceled"];

/** A "Load more" button driving cursor pagination: ``load(cursor)`` answers a page. */
function pager(load, addRows, { signal }) {
  const button = h("button", { type: "button", class: "more", hidden: true }, "Load more");
  let cursor = null;
  const next = async () => {
    button.disabled = true;
    try {
      const page = await load(cursor);
      addRows(page.data);
      cursor = page.next_cursor;
      button.hidden = !page.has_more;
    } catch (error) {
      if (!isAbort(error)) button.replaceWith(errorBox(error));
    } finally {
      button.disabled = false;
    }
  };
  const first = () => {
    cursor = null;
    return next();
  };
  button.addEventListener("click", next);
  signal.addEventListener("abort", () => button.removeEventListener("click", next), { once: true });
  return { button, next, first };
}

export async function videosView(main, { signal, query }) {
  const status = STATUSES.includes(query.get("status")) ? query.get("status") : "";
  const filter = h(
    "select",
    { id: "status-filter", name: "status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)),
  );
  filter.addEventListener("change", () => {
    window.location.hash = filter.value ? `#/videos?status=${filter.value}` : "#/videos";
  });
  const refresh = h("button", { type: "button", class: "small" }, "Refresh");
  refresh.addEventListener("click", () => window.dispatchEvent(new HashChangeEvent("hashchange")));
  const body = h("tbody");
  const empty = h("p", { class: "empty", hidden: true }, status ? `No ${status} videos.` : "No videos yet. ", status ? "" : h("a", { href: "#/" }, "Upload one."));
  const table = h(
    "table",
    { class: "videos", id: "videos" },
    h("caption", { class: "visually-hidden" }, "Your videos, newest first"),
    h("thead", {}, h("tr", {}, ["Video", "Status", "Renditions", "Source", "Uploaded"].map((c) => h("th", { scope: "col" }, c)))),
    body,
  );
  const addRows = (videos) => {
    for (const video of videos) {
      const ready = video.renditions.filter((r) => r.status === "ready").length;
      body.append(
        h(
          "tr",
          { "data-video-id": video.id, "data-status": video.status },
          h(
            "td",
            {},
            h("a", { href: `#/videos/${encodeURIComponent(video.id)}` }, video.source?.filename ?? video.id),
            h("br"),
            h("code", { class: "id" }, video.id),
          ),
          h("td", {}, badge(video.status), video.error ? h("span", { class: "error" }, ` ${video.error}`) : ""),
          h("td", {}, `${ready} of ${video.renditions.length} ready`, h("br"), h("span", { class: "hint" }, video.renditions.map((r) => r.quality).join(" · "))),
          h("td", {}, pixels(video.source?.width, video.source?.height), ", ", formatDuration(video.source?.duration_s)),
          h("td", {}, time(video.created_at)),
        ),
      );
    }
    empty.hidden = body.children.length > 0;
    table.hidden = body.children.length === 0;
  };
  const more = pager(
    (cursor) => {
      const params = new URLSearchParams({ limit: "20" });
      if (status) params.set("status", status);
      if (cursor) params.set("cursor", cursor);
      return request(`/v1/videos?${params}`, { signal });
    },
    addRows,
    { signal },
  );
  main.replaceChildren(
    h("h1", { id: "page-heading", tabindex: "-1" }, "Videos"),
    h("form", { class: "toolbar", "aria-label": "Filter" }, h("label", { for: "status-filter" }, "Status"), " ", filter, " ", refresh),
    table,
    empty,
    more.button,
  );
  document.title = "Videos — vidq";
  await more.next();
}

const splitList = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

function secretBox(secret, what) {
  const code = h("code", { class: "secret" }, secret);
  const copy = h("button", { type: "button", class: "small" }, "Copy");
  copy.addEventListener("click", () =>
    navigator.clipboard.writeText(secret).then(
      () => announce("The secret is on the clipboard."),
      () => announce("Copying failed; select the secret and copy it.", { error: true }),
    ),
  );
  return h("div", { class: "notice", role: "alert" }, h("p", {}, `${what} Keep it now: it is not shown again.`), h("p", {}, code, " ", copy));
}

export async function webhooksView(main, { signal }) {
  const url = h("input", { id: "hook-url", name: "url", type: "url", required: true, placeholder: "https://example.com/vidq-events" });
  const events = h("input", { id: "hook-events", name: "events", value: "video.*", required: true, "aria-describedby": "hook-events-help" });
  const description = h("input", { id: "hook-description", name: "description", maxlength: 500 });
  const result = h("div", { class: "form-result" });
  const form = h(
    "form",
    { class: "hook-form", "aria-labelledby": "new-hook-heading" },
    h("p", {}, h("label", { for: "hook-url" }, "URL"), url),
    h(
      "p",
      {},
      h("label", { for: "hook-events" }, "Events"),
      events,
      h("span", { class: "hint", id: "hook-events-help" }, "Comma-separated patterns: video.*, rendition.completed, or * for every event."),
    ),
    h("p", {}, h("label", { for: "hook-description" }, "Description"), description),
    h("p", {}, h("button", { type: "submit" }, "Add endpoint")),
  );
  const body = h("tbody");
  const table = h(
    "table",
    { class: "webhooks", id: "webhooks" },
    h("caption", { class: "visually-hidden" }, "Webhook endpoints"),
    h("thead", {}, h("tr", {}, ["Endpoint", "Events", "State", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    body,
  );
  const empty = h("p", { class: "empty", hidden: true }, "No endpoints yet.");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await request("/v1/webhooks", {
        method: "POST",
        body: { url: url.value.trim(), events: splitList(events.value), description: description.value.trim() },
        signal,
      });
      form.reset();
      result.replaceChildren(secretBox(created.secret, `Endpoint added. Its signing secret:`));
      announce(`Endpoint ${created.url} added.`);
      await load();
    } catch (error) {
      if (!isAbort(error)) result.replaceChildren(errorBox(error));
    }
  });
  const load = async () => {
    const page = await request("/v1/webhooks", { signal });
    body.replaceChildren(
      ...page.data.map((hook) =>
        h(
          "tr",
          { "data-webhook-id": hook.id },
          h(
            "td",
            {},
            h("a", { href: `#/webhooks/${encodeURIComponent(hook.id)}` }, hook.url),
            hook.description ? [h("br"), h("span", { class: "hint" }, hook.description)] : "",
            h("br"),
            h("code", { class: "id" }, hook.id),
          ),
          h("td", {}, hook.events.join(", ")),
          h("td", {}, badge(hook.enabled ? "enabled" : "disabled"), hook.disabled_reason ? h("span", { class: "hint" }, ` ${hook.disabled_reason}`) : ""),
          h("td", {}, time(hook.created_at)),
        ),
      ),
    );
    empty.hidden = page.data.length > 0;
    table.hidden = page.data.length === 0;
  };
  main.replaceChildren(
    h("h1", { id: "page-heading", tabindex: "-1" }, "Webhooks"),
    h(
      "section",
      { "aria-labelledby": "hooks-heading" },
      h("h2", { id: "hooks-heading" }, "Endpoints"),
      h("p", { class: "hint" }, "Open an endpoint for its delivery log."),
      table,
      empty,
    ),
    h("section", { "aria-labelledby": "new-hook-heading" }, h("h2", { id: "new-hook-heading" }, "Add an endpoint"), form, result),
  );
  document.title = "Webhooks — vidq";
  await load();
}

function deliveryItem(webhookId, delivery, { signal, reload }) {
  const attempts = delivery.attempt_log.map((attempt) =>
    h(
      "tr",
      {},
      h("td", {}, time(attempt.attempted_at, { precise: true })),
      h("td", {}, attempt.status_code ? String(attempt.status_code) : "no answer", attempt.manual ? h("span", { class: "hint" }, " (manual)") : ""),
      h("td", { class: "num" }, `${attempt.latency_ms} ms`),
      h("td", {}, attempt.error ?? attempt.response_body ?? ""),
    ),
  );
  const retry = delivery.status === "failed" ? h("button", { type: "button", class: "small" }, "Send again now") : null;
  retry?.addEventListener("click", async () => {
    try {
      await request(`/v1/webhooks/${encodeURIComponent(webhookId)}/deliveries/${encodeURIComponent(delivery.id)}/retry`, { method: "POST", signal });
      announce("The delivery is queued again.");
      await reload();
    } catch (error) {
      if (!isAbort(error)) announce(error.message, { error: true });
    }
  });
  return h(
    "li",
    { class: "delivery", "data-delivery-id": delivery.id, "data-event-type": delivery.event_type, "data-status": delivery.status },
    h("h3", {}, h("code", {}, delivery.event_type), " ", badge(delivery.status)),
    h(
      "p",
      { class: "meta" },
      "Event ",
      h("code", {}, delivery.event_id),
      delivery.video_id ? [" · video ", h("a", { href: `#/videos/${encodeURIComponent(delivery.video_id)}` }, delivery.video_id)] : "",
      " · created ",
      time(delivery.created_at),
      delivery.completed_at ? [" · finished ", time(delivery.completed_at)] : "",
      delivery.next_attempt_at ? [" · next attempt ", time(delivery.next_attempt_at)] : "",
    ),
    h(
      "table",
      { class: "attempts" },
      h("caption", {}, `${delivery.attempts} attempt${delivery.attempts === 1 ? "" : "s"}`),
      h("thead", {}, h("tr", {}, ["Time", "Status code", "Latency", "Error or response"].map((c) => h("th", { scope: "col", class: c === "Latency" ? "num" : null }, c)))),
      h("tbody", {}, attempts.length ? attempts : h("tr", {}, h("td", { colspan: 4 }, "Not attempted yet."))),
    ),
    retry ? h("p", {}, retry) : "",
  );
}

export async function webhookView(main, webhookId, { signal }) {
  const path = `/v1/webhooks/${encodeURIComponent(webhookId)}`;
  const hook = await request(path, { signal });
  const list = h("ol", { class: "deliveries", id: "deliveries" });
  const empty = h("p", { class: "empty", hidden: true }, "No deliveries yet.");
  const secretSlot = h("div");
  const reload = async () => {
    list.replaceChildren();
    await more.first();
    empty.hidden = list.children.length > 0;
  };
  const more = pager(
    (cursor) => request(`${path}/deliveries?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, { signal }),
    (deliveries) => list.append(...deliveries.map((d) => deliveryItem(webhookId, d, { signal, reload }))),
    { signal },
  );
  const action = (label, run) => {
    const button = h("button", { type: "button" }, label);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await run();
      } catch (error) {
        if (!isAbort(error)) announce(error instanceof ApiError ? error.message : String(error), { error: true });
      } finally {
        button.disabled = false;
      }
    });
    return button;
  };
  const actions = h(
    "p",
    { class: "actions" },
    action("Refresh", reload),
    " ",
    action("Send a test event", async () => {
      await request(`${path}/test`, { method: "POST", signal });
      announce("A webhook.test event is queued; refresh to see its delivery.");
    }),
    " ",
    action(hook.enabled ? "Disable" : "Enable", async () => {
      await request(path, { method: "PATCH", body: { enabled: !hook.enabled }, signal });
      announce(hook.enabled ? "The endpoint is disabled." : "The endpoint is enabled.");
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    }),
    " ",
    action("Rotate secret", async () => {
      const rotated = await request(`${path}/rotate-secret`, { method: "POST", signal });
      secretSlot.replaceChildren(secretBox(rotated.secret, "New signing secret (the old one also signs for 24 hours):"));
    }),
    " ",
    action("Delete endpoint", async () => {
      if (!window.confirm(`Delete the endpoint ${hook.url}? Deliveries in flight stop.`)) return;
      await request(path, { method: "DELETE", signal });
      announce("The endpoint was deleted.");
      window.location.hash = "#/webhooks";
    }),
  );
  actions.lastChild.classList.add("danger");
  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "#/webhooks" }, "← Webhooks")),
    h("h1", { id: "page-heading", tabindex: "-1" }, "Endpoint ", h("span", { class: "url" }, hook.url)),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Id"),
      h("dd", {}, h("code", {}, hook.id)),
      h("dt", {}, "Events"),
      h("dd", {}, hook.events.join(", ")),
      h("dt", {}, "State"),
      h("dd", {}, badge(hook.enabled ? "enabled" : "disabled"), hook.disabled_reason ? ` ${hook.disabled_reason}` : ""),
      hook.description ? [h("dt", {}, "Description"), h("dd", {}, hook.description)] : "",
      h("dt", {}, "Created"),
      h("dd", {}, time(hook.created_at)),
    ),
    actions,
    secretSlot,
    h("section", { "aria-labelledby": "deliveries-heading" }, h("h2", { id: "deliveries-heading" }, "Delivery log"), h("p", { class: "hint" }, "Newest first; every attempt with its time, status code and latency."), list, empty, more.button),
  );
  document.title = `Webhook ${hook.url} — vidq`;
  await reload();
}
