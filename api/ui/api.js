// The HTTP API as the page uses it: fetch with the saved key, JSON errors as ApiError, server-sent
// events read with fetch() (EventSource cannot send the Authorization header), and the key dialog.
import { $ } from "./dom.js";

export const KEY_STORE = "procq.apiKey";

export class ApiError extends Error {
  constructor(status, title, description) {
    super(description || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
  }
}

let keyPrompt = null; // one pending "enter your key" dialog, shared by every request that got a 401
let keyResolve = null;

export async function api(path, options = {}, retried = false) {
  const headers = { ...(options.headers || {}) };
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers });
  if (response.ok) return response;
  let title = response.statusText;
  let description = "";
  try {
    const body = await response.json();
    title = body.title || title;
    description = body.description || "";
  } catch (_) {
    /* not JSON: keep the status text */
  }
  if (response.status === 401 && !retried) {
    await askForKey(description || "This server requires an API key.");
    return api(path, options, true);
  }
  throw new ApiError(response.status, title, description);
}

export async function getJSON(path) {
  return (await api(path)).json();
}

// Read a server-sent event stream; resolves when the server closes it, rejects on errors.
export async function sse(path, onEvent, { signal, lastEventId, onOpen } = {}) {
  const headers = { Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await api(path, { headers, signal, cache: "no-store" });
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // A CR at the end may be half of a CRLF split across chunks: normalise all but that one.
    const held = buffer.endsWith("\r") ? "\r" : "";
    buffer = buffer.slice(0, buffer.length - held.length).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) onEvent(event);
    }
    buffer += held;
  }
}

function parseEvent(block) {
  const event = { event: "message", data: [], id: null };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // comments are heartbeats
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event.event = value;
    else if (field === "data") event.data.push(value);
    else if (field === "id") event.id = value;
  }
  if (!event.data.length && event.event === "message") return null;
  event.data = event.data.join("\n");
  return event;
}

// crypto.randomUUID exists only on https or localhost; getRandomValues works everywhere.
export function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function askForKey(reason) {
  if (!keyPrompt) {
    keyPrompt = new Promise((resolve) => {
      $("key-reason").textContent = reason;
      $("key-input").value = "";
      keyResolve = () => {
        keyPrompt = null;
        keyResolve = null;
        resolve();
      };
      const dialog = $("key-dialog");
      if (!dialog.open) dialog.showModal();
    });
  }
  return keyPrompt;
}

export function setUpKeyDialog(toast) {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    localStorage.setItem(KEY_STORE, key);
    $("key-dialog").close();
    if (keyResolve) keyResolve();
  });
  $("key-button").addEventListener("click", () => {
    $("key-reason").textContent = localStorage.getItem(KEY_STORE) ? "A key is saved in this browser." : "No key saved.";
    $("key-input").value = "";
    $("key-dialog").showModal();
  });
  // Closed without a key (Escape): let the waiting request fail with its 401 instead of hanging.
  $("key-dialog").addEventListener("close", () => keyResolve && keyResolve());
  $("key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    $("key-dialog").close();
    toast("Key forgotten");
  });
}
