// The job list: state chips, tag and search filters (kept in the URL: #/?status=FAILED&tag=x&q=abc),
// the table, and bulk cancel / rerun / delete of the ticked jobs. The list and the counts are fetched
// and drawn together, so the cards never disagree with the table for longer than one refresh.
import { api, getJSON } from "./api.js";
import { $, el, badge, commandLine, relative, ran, toast, waitingFor, STATES, TERMINAL } from "./dom.js";
import { applyStats, renderCounts } from "./overview.js";
import { view } from "./state.js";

const PAGE_SIZE = 50;
let generation = 0; // only the newest refresh may draw: an older answer arriving late is dropped

export function readFilters(query) {
  const params = new URLSearchParams(query);
  view.filter.states = new Set(params.getAll("status").filter((s) => s in STATES));
  view.filter.tag = params.get("tag") || "";
  view.filter.q = params.get("q") || "";
  $("tag-filter").value = view.filter.tag;
  $("search").value = view.filter.q;
  renderFilters();
}

function filterQuery() {
  const params = new URLSearchParams();
  for (const status of view.filter.states) params.append("status", status);
  if (view.filter.tag) params.set("tag", view.filter.tag);
  if (view.filter.q) params.set("q", view.filter.q);
  return params;
}

function listQuery(cursor) {
  const params = filterQuery();
  params.set("limit", String(PAGE_SIZE));
  if (cursor) params.set("cursor", cursor);
  return `/jobs?${params}`;
}

function filtersChanged() {
  const query = filterQuery().toString();
  history.replaceState(null, "", query ? `#/?${query}` : "#/");
  view.selected.clear();
  renderFilters();
  refreshOverview();
}

export function renderFilters() {
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
  renderCounts((status) => toggleState(status, true));
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

export function setFilterText(name, value) {
  view.filter[name] = value.trim();
  filtersChanged();
}

// Fetch the first page and the stats together, then draw both.
export async function refreshOverview() {
  const mine = ++generation;
  const [page, stats] = await Promise.all([
    getJSON(listQuery(null)).catch((error) => error),
    getJSON("/stats").catch(() => null),
  ]);
  if (mine !== generation) return;
  if (stats) applyStats(stats);
  renderFilters();
  if (page instanceof Error) {
    if (page.status !== 404 && page.status !== 405) toast(`Could not list jobs: ${page.message}`);
    return;
  }
  view.jobs = page.jobs || [];
  view.cursor = page.next_cursor || null;
  renderList();
}

async function loadMore() {
  if (!view.cursor) return;
  const page = await getJSON(listQuery(view.cursor));
  view.jobs = view.jobs.concat(page.jobs || []);
  view.cursor = page.next_cursor || null;
  renderList();
}

export function renderList() {
  const shown = new Set(view.jobs.map((job) => job.id));
  for (const id of view.selected) if (!shown.has(id)) view.selected.delete(id);
  $("jobs-body").replaceChildren(...view.jobs.map(jobRow));
  const filtered = view.filter.states.size || view.filter.tag || view.filter.q;
  const empty = $("jobs-empty");
  empty.hidden = view.jobs.length > 0;
  empty.textContent = filtered ? "No jobs match these filters." : "No jobs yet. Submit one with + New job.";
  $("more").hidden = !view.cursor;
  renderBulk();
}

function jobRow(job) {
  const command = commandLine(job.args);
  const tick = el("input", { type: "checkbox", "aria-label": `Select job ${job.id}` });
  tick.checked = view.selected.has(job.id);
  tick.addEventListener("change", () => {
    if (tick.checked) view.selected.add(job.id);
    else view.selected.delete(job.id);
    renderBulk();
  });
  const waiting = waitingFor(job);
  const row = el(
    "tr",
    { "data-id": job.id, "data-status": job.status },
    el("td", { class: "pick" }, tick),
    el("td", { class: "state" }, badge(job.status), waiting && el("span", { class: "when", text: waiting })),
    el("td", { class: "cmd" }, el("a", { href: `#/jobs/${job.id}`, text: command, title: command })),
    el("td", { class: "tags" }, ...(job.tags || []).map((t) => el("span", { class: "tag", text: t }))),
    el("td", { class: "age", title: job.enqueued_at || "", text: relative(job.enqueued_at) }),
    el("td", { class: "ran num", text: ran(job) }),
    el("td", { class: "exit num", text: job.exit_code ?? "" }),
    el("td", { class: "id", title: job.id, text: `…${job.id.slice(-12)}` }), // ids share their time prefix
  );
  row.addEventListener("click", (event) => {
    if (!["A", "INPUT"].includes(event.target.tagName) && !event.target.closest("td.pick")) {
      location.hash = `#/jobs/${job.id}`;
    }
  });
  return row;
}

function renderBulk() {
  const picked = view.jobs.filter((job) => view.selected.has(job.id));
  $("bulk").hidden = picked.length === 0;
  $("bulk-count").textContent = `${picked.length} selected`;
  $("bulk-cancel").disabled = !picked.some((job) => !TERMINAL.has(job.status));
  $("bulk-rerun").disabled = $("bulk-delete").disabled = !picked.some((job) => TERMINAL.has(job.status));
  const all = $("select-all");
  all.checked = picked.length > 0 && picked.length === view.jobs.length;
  all.indeterminate = picked.length > 0 && picked.length < view.jobs.length;
}

// One request per job, four at a time; a summary says what was done and what was skipped and why.
async function bulk(ask, verb, wanted, request) {
  const picked = view.jobs.filter((job) => view.selected.has(job.id));
  const jobs = picked.filter(wanted);
  const skipped = picked.length - jobs.length;
  if (ask && !confirm(`${ask} ${jobs.length} job(s)?`)) return;
  let done = 0;
  const failures = [];
  const queue = [...jobs];
  const worker = async () => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      try {
        await request(job);
        done += 1;
      } catch (error) {
        failures.push(`${job.id.slice(-8)}: ${error.message}`);
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  view.selected.clear();
  const parts = [`${verb} ${done}`];
  if (skipped) parts.push(`${skipped} skipped (not in a state that allows it)`);
  if (failures.length) parts.push(`${failures.length} refused: ${failures[0]}`);
  toast(parts.join("; "));
  await refreshOverview();
}

export function setUpList() {
  $("more").addEventListener("click", loadMore);
  $("select-all").addEventListener("change", (event) => {
    for (const job of view.jobs) {
      if (event.target.checked) view.selected.add(job.id);
      else view.selected.delete(job.id);
    }
    renderList();
  });
  $("bulk-clear").addEventListener("click", () => {
    view.selected.clear();
    renderList();
  });
  $("bulk-cancel").addEventListener("click", () =>
    bulk("Cancel", "Canceled", (job) => !TERMINAL.has(job.status), (job) => api(`/jobs/${job.id}/cancel`, { method: "PUT" })),
  );
  $("bulk-rerun").addEventListener("click", () =>
    bulk(null, "Reran", (job) => TERMINAL.has(job.status), (job) => api(`/jobs/${job.id}/rerun`, { method: "POST" })),
  );
  $("bulk-delete").addEventListener("click", () =>
    bulk("Delete", "Deleted", (job) => TERMINAL.has(job.status), (job) => api(`/jobs/${job.id}`, { method: "DELETE" })),
  );
}
