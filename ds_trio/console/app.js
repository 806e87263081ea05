// The ds_trio browser console. It talks to the stream root like any other
// client (PUT, POST, HEAD and EventSource), plus GET /console/streams for the
// list. Everything a stream holds is shown with textContent, never as HTML.
"use strict";

const MAX_EVENTS = 500; // entries kept in the event list; the oldest go first
const MAX_BACKOFF_MS = 10000; // between attempts to reach a server that stopped answering

const $ = (id) => document.getElementById(id);
let streamRoot = "/v1/stream";
let selected = null; // {name, contentType, tailOffset, closed}
let tail = null; // the live tail: {name, offset, cursor, base64, source, timer, opened, closed, backoff}

function streamUrl(name) {
  return streamRoot + "/" + name.split("/").map(encodeURIComponent).join("/");
}

function mediaType(contentType) {
  return (contentType || "").split(";")[0].trim().toLowerCase();
}

function isJson(contentType) {
  return mediaType(contentType) === "application/json";
}

function usesBase64(contentType) {
  // The server's rule (spec 5.8): SSE data is base64 unless text/* or JSON.
  const type = mediaType(contentType);
  return !(type.startsWith("text/") || type === "application/json");
}

function say(text, kind) {
  const message = $("message");
  message.textContent = text;
  message.dataset.kind = kind;
}

async function failure(what, response) {
  const detail = (await response.text()).trim();
  say(`${what}: ${response.status} ${detail || response.statusText}`, "error");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- the stream list -------------------------------------------------------

async function refreshStreams() {
  let response;
  try {
    response = await fetch("/console/streams", { cache: "no-store" });
  } catch (error) {
    say(`cannot list streams: ${error.message}`, "error");
    return;
  }
  if (!response.ok) return failure("cannot list streams", response);
  const listing = await response.json();
  streamRoot = listing.stream_root;
  $("stream-root").textContent = streamRoot + "/";
  const body = $("streams").tBodies[0];
  body.replaceChildren(
    ...listing.streams.map((stream) => {
      const row = element("tr");
      row.dataset.name = stream.name;
      row.setAttribute("aria-selected", String(selected !== null && selected.name === stream.name));
      row.append(
        element("td", "name", stream.name),
        element("td", "type", stream.content_type),
        element("td", "offset", stream.tail_offset),
        element("td", "state", stream.closed ? "closed" : "open"),
      );
      row.addEventListener("click", () => select(stream.name));
      return row;
    }),
  );
  $("streams-empty").hidden = listing.streams.length > 0;
  $("streams-truncated").hidden = !listing.truncated;
}

// --- the selected stream ---------------------------------------------------

async function select(name) {
  const response = await fetch(streamUrl(name), { method: "HEAD", cache: "no-store" });
  if (!response.ok) {
    say(`cannot open ${name}: ${response.status}`, "error");
    return false;
  }
  selected = {
    name,
    contentType: response.headers.get("Content-Type") || "application/octet-stream",
    tailOffset: response.headers.get("Stream-Next-Offset") || "",
    closed: response.headers.get("Stream-Closed") === "true",
  };
  $("selected-name").textContent = name;
  const state = selected.closed ? "closed" : "open";
  $("selected-meta").textContent = `${selected.contentType} · tail ${selected.tailOffset} · ${state}`;
  $("append").disabled = selected.closed;
  $("close-stream").disabled = selected.closed;
  $("tail-start").disabled = false;
  for (const row of $("streams").tBodies[0].rows) {
    row.setAttribute("aria-selected", String(row.dataset.name === name));
  }
  return true;
}

async function createStream(event) {
  event.preventDefault();
  const name = $("create-name").value.trim().replace(/^\/+|\/+$/g, "");
  if (!name) return;
  const contentType = $("create-type").value;
  const response = await fetch(streamUrl(name), {
    method: "PUT",
    headers: { "Content-Type": contentType },
  });
  if (response.status === 201) say(`created ${name} (${contentType})`, "ok");
  else if (response.status === 200) say(`${name} already exists, as asked`, "ok");
  else return failure(`cannot create ${name}`, response);
  await refreshStreams();
  await select(name);
}

async function append(event) {
  event.preventDefault();
  if (selected === null) return;
  const text = $("append-body").value;
  if (text === "") {
    say("nothing to append: type some text first", "error");
    return;
  }
  if (isJson(selected.contentType)) {
    try {
      JSON.parse(text);
    } catch (error) {
      say(`not JSON: ${error.message}`, "error");
      return;
    }
  }
  const { name, contentType } = selected;
  const response = await fetch(streamUrl(name), {
    method: "POST",
    headers: { "Content-Type": contentType },
    body: text,
  });
  if (!response.ok) return failure(`cannot append to ${name}`, response);
  say(`appended to ${name}; next offset ${response.headers.get("Stream-Next-Offset")}`, "ok");
  $("append-body").value = "";
  await refreshStreams();
  await select(name);
}

async function closeStream() {
  if (selected === null) return;
  const { name } = selected;
  const response = await fetch(streamUrl(name), {
    method: "POST",
    headers: { "Stream-Closed": "true" },
  });
  if (!response.ok) return failure(`cannot close ${name}`, response);
  say(`closed ${name} at ${response.headers.get("Stream-Next-Offset")}`, "ok");
  await refreshStreams();
  await select(name);
}

// --- the live tail ---------------------------------------------------------

function setTailStatus(state, text) {
  const status = $("tail-status");
  status.dataset.state = state;
  status.textContent = text;
}

function addEvent(item) {
  const events = $("events");
  events.append(item);
  while (events.childElementCount > MAX_EVENTS) events.firstElementChild.remove();
  item.scrollIntoView({ block: "nearest" });
}

function showData(payload) {
  const item = element("li", "event data");
  item.append(element("span", "label", "data"));
  if (tail.base64) {
    const bytes = Uint8Array.from(atob(payload.replace(/[\r\n]/g, "")), (c) => c.charCodeAt(0));
    item.append(element("span", "field", `${bytes.length} bytes, base64-decoded:`));
    item.append(element("pre", "", new TextDecoder().decode(bytes)));
  } else {
    let messages = null;
    if (isJson(tail.contentType)) {
      try {
        messages = JSON.parse(payload);
      } catch {
        messages = null; // shown as it came
      }
    }
    if (Array.isArray(messages)) {
      for (const message of messages) item.append(element("pre", "", JSON.stringify(message)));
    } else {
      item.append(element("pre", "", payload));
    }
  }
  addEvent(item);
}

function showControl(control) {
  const item = element("li", control.streamClosed ? "event control closed" : "event control");
  item.append(element("span", "label", control.streamClosed ? "stream closed" : "control"));
  for (const key of ["streamNextOffset", "streamCursor", "upToDate", "streamClosed"]) {
    if (key in control) item.append(element("span", "field", `${key}: ${control[key]}`));
  }
  addEvent(item);
}

function sseUrl(current) {
  const query = new URLSearchParams({ offset: current.offset, live: "sse" });
  if (current.cursor) query.set("cursor", current.cursor);
  return `${streamUrl(current.name)}?${query}`;
}

function connect() {
  const current = tail;
  const source = new EventSource(sseUrl(current));
  current.source = source;
  current.timer = null;
  source.addEventListener("open", () => {
    current.opened = true;
    current.backoff = 500;
    setTailStatus("live", `live: ${current.name}`);
  });
  source.addEventListener("data", (event) => showData(event.data));
  source.addEventListener("control", (event) => {
    const control = JSON.parse(event.data);
    current.offset = control.streamNextOffset;
    if (control.streamCursor) current.cursor = control.streamCursor;
    $("tail-offset").value = current.offset;
    showControl(control);
    if (control.streamClosed) {
      current.closed = true;
      source.close(); // no reconnecting to a closed stream
      setTailStatus("closed", `stream closed at ${current.offset}`);
      $("tail-stop").disabled = true;
    }
  });
  source.addEventListener("error", () => {
    // The server ended the response (its reconnect interval), refused it, or
    // could not be reached. EventSource would retry from the first offset; we
    // go on from the last control event's instead.
    if (tail !== current || current.closed) return;
    source.close();
    if (current.opened) {
      current.opened = false;
      setTailStatus("reconnecting", `reconnecting from ${current.offset}…`);
      connect(); // a response that ended: the next one starts where it stopped
      return;
    }
    setTailStatus("reconnecting", `cannot tail ${current.name}; trying again…`);
    current.timer = setTimeout(() => probe(current), current.backoff);
    current.backoff = Math.min(current.backoff * 2, MAX_BACKOFF_MS);
  });
}

async function probe(current) {
  // EventSource does not say why it failed: ask once with fetch, and stop on
  // an answer that retrying cannot change (a bad offset, a deleted stream).
  const controller = new AbortController();
  let refusal = null;
  try {
    const response = await fetch(sseUrl(current), { signal: controller.signal, cache: "no-store" });
    if (response.status >= 400 && response.status < 500 && response.status !== 429) {
      refusal = `${response.status} ${(await response.text()).trim()}`;
    }
  } catch {
    refusal = null; // the server is away: try again later
  } finally {
    controller.abort();
  }
  if (tail !== current) return;
  if (refusal !== null) {
    setTailStatus("error", `cannot tail ${current.name}: ${refusal}`);
    stopTail(false);
    return;
  }
  connect();
}

function startTail(event) {
  event.preventDefault();
  if (selected === null) return;
  stopTail(false);
  $("events").replaceChildren();
  const offset = $("tail-offset").value.trim() || "-1";
  tail = {
    name: selected.name,
    contentType: selected.contentType,
    base64: usesBase64(selected.contentType),
    offset,
    cursor: null,
    source: null,
    timer: null,
    opened: false,
    closed: false,
    backoff: 500,
  };
  setTailStatus("connecting", `connecting to ${tail.name}…`);
  $("tail-stop").disabled = false;
  connect();
}

function stopTail(announce) {
  if (tail !== null) {
    if (tail.source !== null) tail.source.close();
    if (tail.timer !== null) clearTimeout(tail.timer);
    tail = null;
  }
  $("tail-stop").disabled = true;
  if (announce) setTailStatus("idle", "stopped");
}

document.addEventListener("DOMContentLoaded", () => {
  $("refresh").addEventListener("click", refreshStreams);
  $("create-form").addEventListener("submit", createStream);
  $("append-form").addEventListener("submit", append);
  $("close-stream").addEventListener("click", closeStream);
  $("tail-form").addEventListener("submit", startTail);
  $("tail-stop").addEventListener("click", () => stopTail(true));
  refreshStreams();
});
