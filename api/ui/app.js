// procq dashboard: plain JavaScript over the HTTP API. Live updates come from GET /events and the job's
// log stream, read with fetch() so the API key travels in the Authorization header (EventSource cannot
// send headers). Every job value is put in the page with textContent, never as HTML.
"use strict";

const STATES = {
  IN_QUEUE: { word: "Queued", icon: "◷" },
  IN_PROGRESS: { word: "Running", icon: "▶" },
  COMPLETED: { word: "Completed", icon: "✔" },
  FAILED: { word: "Failed", icon: "✘" },
  CANCELED: { word: "Canceled", icon: "⊘" },
};
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELED"]);
const KEY_STORE = "procq.apiKey";
const PAGE_SIZE = 50;
const STATS_EVERY_MS = 5000;
const HISTORY_POINTS = 120; // ten minutes of samples at STATS_EVERY_MS

const $ = (id) => document.getElementById(id);
const view = {
  filter: { states: new Set(), tag: "" },
  jobs: [],
  cursor: null,
  jobId: null,
  job: null,
  logAbort: null,
  history: [],
  polling: false,
};

// ---------------------------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, title, description) {
    super(description || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
  }
}

let keyPrompt = null; // one pending "enter your key" dialog, shared by every request that got a 401

async function api(path, options = {}, retried = false) {
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

async function getJSON(path) {
  return (await api(path)).json();
}

// Read a server-sent event stream; resolves when the server closes it, rejects on errors.
async function sse(path, onEvent, { signal, lastEventId, onOpen } = {}) {
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
function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// ------------------------------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function badge(status) {
  const state = STATES[status] || { word: status, icon: "?" };
  return el(
    "span",
    { class: `badge s-${status}`, title: status, "data-status": status },
    el("span", { class: "icon", "aria-hidden": "true", text: state.icon }),
    el("span", { class: "word", text: state.word }),
  );
}

function commandLine(args) {
  return (args || []).map((a) => (a === "" || /[\s"'\\]/.test(a) ? JSON.stringify(a) : a)).join(" ");
}

function ago(text) {
  if (!text) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(text)) / 1000);
  return `${span(seconds)} ago`;
}

function span(seconds) {
  if (seconds < 60) return `${Math.floor(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

function ran(job) {
  if (!job.started_at) return "";
  const end = job.completed_at ? Date.parse(job.completed_at) : Date.now();
  const seconds = Math.max(0, (end - Date.parse(job.started_at)) / 1000);
  return seconds < 60 ? `${seconds.toFixed(1)}s` : span(seconds);
}

function localTime(text) {
  if (!text) return "—";
  const moment = new Date(text);
  return `${moment.toLocaleString()} (${ago(text)})`;
}

function bytes(n) {
  if (!n) return null; // unset, or 0: not measured (the job ended before the first sample)
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.hidden = true), 4500);
}

function setLive(state, label) {
  const live = $("live");
  live.dataset.state = state;
  live.textContent = label || { live: "live", polling: "polling", offline: "reconnecting…" }[state] || state;
}

// ----------------------------------------------------------------------------------- overview/stats

function renderCounts(counts) {
  const box = $("counts");
  box.replaceChildren();
  for (const [status, state] of Object.entries(STATES)) {
    const n = counts ? counts[status] ?? 0 : "–";
    const card = el(
      "button",
      {
        class: `card count s-${status}${view.filter.states.has(status) ? " active" : ""}`,
        type: "button",
        title: `Show ${state.word.toLowerCase()} jobs`,
        "data-status": status,
        "aria-pressed": String(view.filter.states.has(status)),
      },
      el("span", { class: "card-title" }, badge(status)),
      el("span", { class: "number", text: String(n) }),
    );
    card.addEventListener("click", () => toggleState(status, true));
    box.append(card);
  }
}

async function refreshStats() {
  let stats;
  try {
    stats = await getJSON("/stats");
  } catch (error) {
    if (error.status === 404) renderCounts(null);
    return;
  }
  view.lastCounts = stats.counts || {};
  renderCounts(view.lastCounts);
  const workers = stats.workers || {};
  $("workers-busy").textContent = workers.busy ?? "–";
  $("workers-total").textContent = workers.total ?? "–";
  const share = workers.total ? Math.min(1, (workers.busy || 0) / workers.total) : 0;
  $("workers-bar").style.width = `${Math.round(share * 100)}%`;
  $("workers-meter").setAttribute("aria-valuenow", String(workers.busy ?? 0));
  const submitted = (stats.submitted_per_s || 0) * 60;
  const completed = (stats.completed_per_s || 0) * 60;
  view.history.push({ submitted, completed });
  if (view.history.length > HISTORY_POINTS) view.history.shift();
  $("rate-submitted").textContent = `${submitted.toFixed(1)}/min`;
  $("rate-completed").textContent = `${completed.toFixed(1)}/min`;
  renderSparkline();
}

function renderSparkline() {
  const svg = $("spark");
  const points = view.history;
  const top = Math.max(1, ...points.map((p) => Math.max(p.submitted, p.completed)));
  const line = (key) => {
    const poly = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    const step = 300 / Math.max(1, HISTORY_POINTS - 1);
    const start = 300 - step * (points.length - 1);
    poly.setAttribute(
      "points",
      points.map((p, i) => `${(start + i * step).toFixed(1)},${(58 - (p[key] / top) * 54).toFixed(1)}`).join(" "),
    );
    poly.setAttribute("class", key);
    return poly;
  };
  const baseline = document.createElementNS("http://www.w3.org/2000/svg", "line");
  for (const [name, value] of Object.entries({ x1: 0, y1: 58, x2: 300, y2: 58, class: "baseline" })) {
    baseline.setAttribute(name, String(value));
  }
  svg.dataset.points = String(points.length);
  $("spark-note").hidden = points.length > 1;
  svg.replaceChildren(baseline, ...(points.length > 1 ? [line("submitted"), line("completed")] : []));
}

// --------------------------------------------------------------------------------------- job list

function renderFilters() {
  const box = $("state-filters");
  box.replaceChildren();
  const all = el("button", { type: "button", "aria-pressed": String(!view.filter.states.size), text: "All" });
  all.addEventListener("click", () => {
    view.filter.states.clear();
    filtersChanged();
  });
  box.append(all);
  for (const [status, state] of Object.entries(STATES)) {
    const chip = el("button", {
      type: "button",
      "aria-pressed": String(view.filter.states.has(status)),
      "data-status": status,
      text: `${state.icon} ${state.word}`,
    });
    chip.addEventListener("click", () => toggleState(status, false));
    box.append(chip);
  }
}

function toggleState(status, only) {
  const states = view.filter.states;
  if (only) {
    const alone = states.size === 1 && states.has(status);
    states.clear();
    if (!alone) states.add(status);
  } else if (states.has(status)) states.delete(status);
  else states.add(status);
  filtersChanged();
}

function filtersChanged() {
  renderFilters();
  renderCounts(view.lastCounts);
  refreshList();
  refreshStats();
}

function listQuery(cursor) {
  const params = new URLSearchParams();
  for (const status of view.filter.states) params.append("status", status);
  if (view.filter.tag) params.set("tag", view.filter.tag);
  params.set("limit", String(PAGE_SIZE));
  if (cursor) params.set("cursor", cursor);
  return `/jobs?${params}`;
}

async function refreshList() {
  try {
    const page = await getJSON(listQuery(null));
    view.jobs = page.jobs || [];
    view.cursor = page.next_cursor || null;
  } catch (error) {
    if (error.status === 400) toast(error.message);
    else if (error.status !== 404 && error.status !== 405) toast(`Could not list jobs: ${error.message}`);
    return;
  }
  renderList();
}

async function loadMore() {
  if (!view.cursor) return;
  const page = await getJSON(listQuery(view.cursor));
  view.jobs = view.jobs.concat(page.jobs || []);
  view.cursor = page.next_cursor || null;
  renderList();
}

function renderList() {
  const body = $("jobs-body");
  body.replaceChildren(...view.jobs.map(jobRow));
  $("jobs-empty").hidden = view.jobs.length > 0;
  $("more").hidden = !view.cursor;
}

function jobRow(job) {
  const link = el("a", { href: `#/jobs/${job.id}`, text: commandLine(job.args), title: commandLine(job.args) });
  const tags = el("td", { class: "tags" }, ...(job.tags || []).map((t) => el("span", { class: "tag", text: t })));
  const row = el(
    "tr",
    { "data-id": job.id, "data-status": job.status },
    el("td", { class: "state" }, badge(job.status)),
    el("td", { class: "cmd" }, link),
    tags,
    el("td", { class: "age", title: job.enqueued_at || "", text: ago(job.enqueued_at) }),
    el("td", { class: "ran num", text: ran(job) }),
    el("td", { class: "exit num", text: job.exit_code ?? "" }),
    el("td", { class: "id", title: job.id, text: `…${job.id.slice(-10)}` }), // ids share their time prefix
  );
  row.addEventListener("click", (event) => {
    if (event.target.tagName !== "A") location.hash = `#/jobs/${job.id}`;
  });
  return row;
}

// ---------------------------------------------------------------------------------------- job page

async function showJob(id) {
  if (view.jobId !== id) {
    stopLog();
    view.jobId = id;
    view.job = null;
    $("job-log").textContent = "";
    $("job-result").textContent = "";
    $("job-result").hidden = $("result-title").hidden = true;
    $("job-details").replaceChildren();
    $("job-command").textContent = "";
    $("job-state").replaceChildren();
  }
  $("list-view").hidden = true;
  $("job-view").hidden = false;
  document.body.classList.add("on-job");
  await refreshJob();
  if (view.job && !view.logAbort) followLog(id);
}

async function refreshJob() {
  const id = view.jobId;
  if (!id) return;
  try {
    renderJob(await getJSON(`/jobs/${id}/status`));
  } catch (error) {
    $("job-command").textContent = error.status === 404 ? `No job ${id}` : error.message;
  }
}

function renderJob(job) {
  if (job.id !== view.jobId) return;
  const before = view.job;
  view.job = job;
  $("job-state").replaceChildren(badge(job.status));
  $("job-command").textContent = commandLine(job.args);
  document.title = `${STATES[job.status]?.word || job.status} · ${commandLine(job.args).slice(0, 40)} · procq`;
  $("cancel-job").disabled = TERMINAL.has(job.status);
  $("download-result").disabled = job.status !== "COMPLETED";
  const usage = job.resources || {};
  const cpu =
    usage.cpu_user_seconds !== undefined && usage.cpu_user_seconds !== null
      ? `${(usage.cpu_user_seconds + (usage.cpu_system_seconds || 0)).toFixed(2)} s`
      : null;
  const rows = [
    ["State", badge(job.status)],
    ["Exit code", job.exit_code],
    ["Error", job.error],
    ["Submitted", localTime(job.enqueued_at)],
    ["Started", job.started_at ? localTime(job.started_at) : null],
    ["Completed", job.completed_at ? localTime(job.completed_at) : null],
    ["Ran for", ran(job) || null],
    ["Runs at", job.run_at ? localTime(job.run_at) : null],
    ["Attempts", job.attempts],
    ["Priority", job.priority],
    ["Queue", job.queue],
    ["Timeout", job.timeout_seconds ? `${job.timeout_seconds} s` : null],
    ["CPU time", cpu],
    ["Peak memory", bytes(usage.peak_rss_bytes)],
    ["Wall time", usage.wall_seconds !== undefined && usage.wall_seconds !== null ? `${usage.wall_seconds.toFixed(2)} s` : null],
    ["Tags", (job.tags || []).length ? job.tags.join(", ") : null],
    ["Result type", job.mime_type],
    ["Webhook", job.webhook],
    ["Owner", job.owner],
    ["Rerun of", job.rerun_of],
    ["PID", job.pid],
    ["ID", job.id],
  ];
  const details = $("job-details");
  details.replaceChildren();
  const argv = el("div", { class: "argv" }, el("dt", { text: "Arguments" }));
  argv.append(el("dd", {}, ...(job.args || []).map((a) => el("code", { text: a === "" ? '""' : a }))));
  for (const [name, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    const dd = el("dd", {});
    dd.append(typeof value === "object" ? value : String(value));
    details.append(el("div", { "data-field": name }, el("dt", { text: name }), dd));
  }
  details.append(argv);
  if (job.status === "COMPLETED" && (!before || before.status !== "COMPLETED")) showResultPreview(job);
}

function stopLog() {
  if (view.logAbort) view.logAbort.abort();
  view.logAbort = null;
}

async function followLog(id) {
  const abort = new AbortController();
  view.logAbort = abort;
  const pre = $("job-log");
  const state = $("log-state");
  let lastId = null;
  let failures = 0;
  state.textContent = "(following)";
  while (!abort.signal.aborted) {
    let ended = false;
    try {
      await sse(
        `/jobs/${id}/logs?stream=stderr&follow=1`,
        (event) => {
          if (event.event === "log") {
            failures = 0;
            lastId = event.id || lastId;
            const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
            pre.append(JSON.parse(event.data));
            if (atBottom) pre.scrollTop = pre.scrollHeight;
          } else if (event.event === "end") {
            ended = true;
            renderJob(JSON.parse(event.data));
          }
        },
        { signal: abort.signal, lastEventId: lastId },
      );
    } catch (error) {
      if (abort.signal.aborted) return;
      if (error.status === 404 && view.job) {
        state.textContent = "(this server does not stream logs)";
        return;
      }
    }
    if (ended) {
      state.textContent = "(finished)";
      break;
    }
    failures += 1;
    await sleep(Math.min(5000, 250 * 2 ** failures));
  }
  if (view.logAbort === abort) view.logAbort = null;
}

function isText(mime) {
  return /^text\/|json|xml|csv|yaml|javascript/.test(mime || "");
}

async function showResultPreview(job) {
  if (!isText(job.mime_type)) return;
  try {
    const response = await api(`/jobs/${job.id}/result`);
    const text = await response.text();
    if (job.id !== view.jobId) return;
    $("result-title").hidden = $("job-result").hidden = false;
    $("job-result").textContent = text.length > 100000 ? `${text.slice(0, 100000)}\n… (download for the rest)` : text;
  } catch (_) {
    /* the download button still works, and says why if it does not */
  }
}

async function cancelJob() {
  const id = view.jobId;
  if (!id || !confirm(`Cancel job ${id}?\n${commandLine(view.job?.args)}`)) return;
  const button = $("cancel-job");
  button.disabled = true;
  button.textContent = "Canceling…";
  try {
    const response = await api(`/jobs/${id}/cancel`, { method: "PUT" });
    renderJob(await response.json());
    toast("Job canceled");
  } catch (error) {
    toast(`Could not cancel: ${error.message}`);
    await refreshJob();
  } finally {
    button.textContent = "Cancel job";
  }
}

async function downloadResult() {
  const job = view.job;
  if (!job) return;
  try {
    const response = await api(`/jobs/${job.id}/result`);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const ext = { "application/json": "json", "text/csv": "csv", "text/html": "html" }[job.mime_type.split(";")[0]];
    const link = el("a", { href: url, download: `${job.id}.${ext || (isText(job.mime_type) ? "txt" : "bin")}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    toast(`Could not download: ${error.message}`);
  }
}

async function rerunJob() {
  try {
    const response = await api(`/jobs/${view.jobId}/rerun`, { method: "POST" });
    const job = await response.json();
    location.hash = `#/jobs/${job.id}`;
  } catch (error) {
    toast(error.status === 404 || error.status === 405 ? "This server cannot rerun jobs." : error.message);
  }
}

// ------------------------------------------------------------------------------------- submit form

function addArg(value = "") {
  const input = el("input", { type: "text", "aria-label": "argument", spellcheck: "false", autocomplete: "off" });
  input.value = value;
  const remove = el("button", { type: "button", class: "ghost", title: "Remove", "aria-label": "Remove", text: "×" });
  const item = el("li", {}, input, remove);
  remove.addEventListener("click", () => {
    if ($("arg-list").children.length > 1) item.remove();
    else input.value = "";
  });
  $("arg-list").append(item);
  return input;
}

function openSubmit() {
  const list = $("arg-list");
  if (!list.children.length) addArg();
  $("submit-error").hidden = true;
  $("submit-dialog").showModal();
  list.querySelector("input").focus();
}

function readSubmitForm() {
  const form = $("submit-form");
  const args = Array.from($("arg-list").querySelectorAll("input"), (input) => input.value);
  while (args.length > 1 && args[args.length - 1] === "") args.pop();
  const body = { args };
  const number = (name, integer) => {
    const raw = form.elements[name].value.trim();
    if (raw === "") return;
    body[name] = integer ? parseInt(raw, 10) : Number(raw);
  };
  number("priority", true);
  number("delay_seconds", false);
  number("timeout_seconds", false);
  const tags = form.elements.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
  if (tags.length) body.tags = tags;
  for (const name of ["mime_type", "queue"]) {
    const value = form.elements[name].value.trim();
    if (value) body[name] = value;
  }
  return body;
}

async function submitJob(event) {
  event.preventDefault();
  const body = readSubmitForm();
  const error = $("submit-error");
  if (!body.args[0]) {
    error.textContent = "The first box must name the command to run.";
    error.hidden = false;
    return;
  }
  const go = $("submit-go");
  go.disabled = true;
  try {
    const response = await api("/jobs", { method: "POST", json: body, headers: { "Idempotency-Key": randomKey() } });
    const job = await response.json();
    $("submit-dialog").close();
    $("submit-form").reset();
    $("arg-list").replaceChildren();
    location.hash = `#/jobs/${job.id}`;
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
  } finally {
    go.disabled = false;
  }
}

// ------------------------------------------------------------------------------------------- API key

function askForKey(reason) {
  if (!keyPrompt) {
    keyPrompt = new Promise((resolve) => {
      $("key-reason").textContent = reason;
      $("key-input").value = "";
      const dialog = $("key-dialog");
      askForKey.resolve = () => {
        keyPrompt = null;
        resolve();
      };
      if (!dialog.open) dialog.showModal();
    });
  }
  return keyPrompt;
}

function saveKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  localStorage.setItem(KEY_STORE, key);
  $("key-dialog").close();
  if (askForKey.resolve) askForKey.resolve();
  askForKey.resolve = null;
}

// -------------------------------------------------------------------------------------- live updates

const listSoon = debounce(refreshList, 250);
const statsSoon = debounce(refreshStats, 400);

function onJobEvent(change) {
  listSoon();
  statsSoon();
  if (change.id === view.jobId && (!view.job || view.job.status !== change.status)) refreshJob();
}

async function followEvents() {
  let failures = 0;
  for (;;) {
    try {
      await sse("/events", (event) => event.event === "job" && onJobEvent(JSON.parse(event.data)), {
        onOpen: () => {
          failures = 0;
          setLive("live");
          refreshList(); // catch up on anything that changed while we were away
        },
      });
    } catch (error) {
      if (error.status === 404) return poll(); // a server without /events: poll instead
    }
    failures += 1;
    setLive("offline");
    await sleep(Math.min(10000, 500 * 2 ** failures));
  }
}

async function poll() {
  setLive("polling");
  view.polling = true;
  for (;;) {
    await Promise.all([refreshList(), refreshStats(), view.jobId ? refreshJob() : null]);
    await sleep(2000);
  }
}

// -------------------------------------------------------------------------------------------- routes

function route() {
  const match = location.hash.match(/^#\/jobs\/([A-Za-z0-9_-]{1,64})$/);
  if (match) {
    showJob(match[1]);
    return;
  }
  stopLog();
  view.jobId = null;
  view.job = null;
  document.title = "procq";
  $("job-view").hidden = true;
  $("list-view").hidden = false;
  document.body.classList.remove("on-job");
  refreshList();
}

function start() {
  renderFilters();
  renderCounts(null);
  renderSparkline();
  $("new-job").addEventListener("click", openSubmit);
  $("add-arg").addEventListener("click", () => addArg().focus());
  $("submit-form").addEventListener("submit", submitJob);
  $("submit-close").addEventListener("click", () => $("submit-dialog").close());
  $("key-form").addEventListener("submit", saveKey);
  $("key-button").addEventListener("click", () => {
    $("key-reason").textContent = localStorage.getItem(KEY_STORE) ? "A key is saved in this browser." : "No key saved.";
    $("key-input").value = "";
    $("key-dialog").showModal();
  });
  $("key-dialog").addEventListener("close", () => {
    // Closed without a key (Escape): let the waiting request fail with its 401 instead of hanging.
    if (askForKey.resolve) askForKey.resolve();
    askForKey.resolve = null;
  });
  $("key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    $("key-dialog").close();
    toast("Key forgotten");
  });
  $("cancel-job").addEventListener("click", cancelJob);
  $("download-result").addEventListener("click", downloadResult);
  $("rerun-job").addEventListener("click", rerunJob);
  $("more").addEventListener("click", loadMore);
  $("tag-filter").addEventListener(
    "input",
    debounce(() => {
      view.filter.tag = $("tag-filter").value.trim();
      refreshList();
    }, 300),
  );
  window.addEventListener("hashchange", route);
  setInterval(() => {
    if (!$("list-view").hidden) renderList(); // keep "12s ago" true
    else if (view.job && view.job.status === "IN_PROGRESS") renderJob(view.job);
  }, 5000);
  route();
  refreshStats();
  setInterval(refreshStats, STATS_EVERY_MS);
  followEvents();
}

start();
