// Small helpers for building the page: elements (values only ever as text, never as HTML), state
// badges, times (past and future), durations, sizes, and the toast.
export const STATES = {
  IN_QUEUE: { word: "Queued", icon: "◷" },
  IN_PROGRESS: { word: "Running", icon: "▶" },
  COMPLETED: { word: "Completed", icon: "✔" },
  FAILED: { word: "Failed", icon: "✘" },
  CANCELED: { word: "Canceled", icon: "⊘" },
};
export const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELED"]);

export const $ = (id) => document.getElementById(id);
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function badge(status) {
  const state = STATES[status] || { word: status, icon: "?" };
  return el(
    "span",
    { class: `badge s-${status}`, title: status, "data-status": status },
    el("span", { class: "icon", "aria-hidden": "true", text: state.icon }),
    el("span", { class: "word", text: state.word }),
  );
}

export function commandLine(args) {
  return (args || []).map((a) => (a === "" || /[\s"'\\]/.test(a) ? JSON.stringify(a) : a)).join(" ");
}

// "12s ago" for a past time, "in 5s" for a future one (a scheduled start, a retry).
export function relative(text) {
  if (!text) return "";
  const seconds = (Date.parse(text) - Date.now()) / 1000;
  if (seconds >= 0.5) return `in ${span(seconds, Math.round)}`; // a countdown: 119.6 s is "in 2m"
  return `${span(Math.max(0, -seconds))} ago`;
}

export function span(seconds, round = Math.floor) {
  for (const [unit, size, next] of [["s", 1, 60], ["m", 60, 60], ["h", 3600, 24]]) {
    const n = round(seconds / size);
    if (n < next) return `${n}${unit}`;
  }
  return `${round(seconds / 86400)}d`;
}

export function ran(job) {
  if (!job.started_at) return "";
  const end = job.completed_at ? Date.parse(job.completed_at) : Date.now();
  const seconds = Math.max(0, (end - Date.parse(job.started_at)) / 1000);
  return seconds < 60 ? `${seconds.toFixed(1)}s` : span(seconds);
}

export function localTime(text) {
  if (!text) return "—";
  return `${new Date(text).toLocaleString()} (${relative(text)})`;
}

export function seconds(value) {
  return value === undefined || value === null ? null : `${value.toFixed(2)} s`;
}

export function bytes(n) {
  if (!n) return null; // unset, or 0: not measured (the job ended before the first sample)
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// What a queued job is waiting for, if not just a free worker: its start time or its dependencies.
export function waitingFor(job) {
  if (job.status !== "IN_QUEUE") return null;
  if (job.run_at && Date.parse(job.run_at) > Date.now()) {
    return `${job.runs && job.runs.length ? "retry" : "scheduled"} ${relative(job.run_at)}`;
  }
  if (job.after && job.after.length) return `after ${job.after.length} job${job.after.length > 1 ? "s" : ""}`;
  return null;
}

export function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.hidden = true), 4500);
}

export function setLive(state, label) {
  const live = $("live");
  live.dataset.state = state;
  live.textContent = label || { live: "live", polling: "polling", offline: "reconnecting…" }[state] || state;
}

// Run fn at most once per `ms`, and never starve: calls that arrive while it waits or runs lead to
// exactly one more run after it. (A debounce would never fire while events keep coming.)
export function throttle(fn, ms) {
  let busy = false;
  let again = false;
  let last = 0;
  const run = async () => {
    busy = true;
    const wait = last + ms - Date.now();
    if (wait > 0) await sleep(wait);
    again = false;
    last = Date.now();
    try {
      await fn();
    } finally {
      busy = false;
      if (again) run();
    }
  };
  return () => {
    if (busy) again = true;
    else run();
  };
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
