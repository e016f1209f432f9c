// The overview cards: counts per state (the caller's own jobs), busy workers, and the throughput chart,
// filled from the recent history GET /stats gives and then from each new sample.
import { $, el, badge, STATES } from "./dom.js";
import { view } from "./state.js";

const HISTORY_POINTS = 120; // ten minutes of samples at five seconds

export function renderCounts(onPick) {
  const box = $("counts");
  box.replaceChildren();
  for (const [status, state] of Object.entries(STATES)) {
    const n = view.counts ? view.counts[status] ?? 0 : "–";
    const active = view.filter.states.has(status);
    const card = el(
      "button",
      {
        class: `card count s-${status}${active ? " active" : ""}`,
        type: "button",
        title: `Show ${state.word.toLowerCase()} jobs`,
        "data-status": status,
        "aria-pressed": String(active),
      },
      el("span", { class: "card-title" }, badge(status)),
      el("span", { class: "number", text: String(n) }),
    );
    card.addEventListener("click", () => onPick(status));
    box.append(card);
  }
}

// Apply one GET /stats answer (already fetched, so the caller can render it with the list it goes with).
export function applyStats(stats) {
  view.counts = stats.counts || {};
  const workers = stats.workers || {};
  $("workers-busy").textContent = workers.busy ?? "–";
  $("workers-total").textContent = workers.total ?? "–";
  const share = workers.total ? Math.min(1, (workers.busy || 0) / workers.total) : 0;
  $("workers-bar").style.width = `${Math.round(share * 100)}%`;
  $("workers-meter").setAttribute("aria-valuenow", String(workers.busy ?? 0));
  const submitted = (stats.submitted_per_s || 0) * 60;
  const completed = (stats.completed_per_s || 0) * 60;
  const history = stats.history;
  if (history && Array.isArray(history.submitted)) {
    const perMinute = 60 / (history.interval_s || 10);
    view.history = history.submitted.map((n, i) => ({
      submitted: n * perMinute,
      completed: (history.completed[i] || 0) * perMinute,
    }));
  } else {
    view.history.push({ submitted, completed });
    if (view.history.length > HISTORY_POINTS) view.history.shift();
  }
  $("rate-submitted").textContent = `${submitted.toFixed(1)}/min`;
  $("rate-completed").textContent = `${completed.toFixed(1)}/min`;
  renderSparkline();
}

export function renderSparkline() {
  const svg = $("spark");
  const points = view.history;
  const top = Math.max(1, ...points.map((p) => Math.max(p.submitted, p.completed)));
  const slots = Math.max(points.length, 2);
  const line = (key) => {
    const poly = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    const step = 300 / (slots - 1);
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
