// procq dashboard: plain ES modules over the HTTP API, no build step. This module routes between the
// views (#/ the jobs, #/jobs/<id> one job, #/queues) and keeps them live from GET /events.
import { setUpKeyDialog, sse } from "./api.js";
import { $, debounce, setLive, sleep, throttle, toast } from "./dom.js";
import { refreshJob, renderJob, setUpJob, showJob, stopLog } from "./job.js";
import { readFilters, refreshOverview, renderList, setFilterText, setUpList } from "./list.js";
import { renderSparkline } from "./overview.js";
import { refreshQueues } from "./queues.js";
import { view } from "./state.js";
import { setUpSubmit } from "./submit.js";

const STATS_EVERY_MS = 5000;
const REFRESH_MS = 250; // at most four list refreshes a second however fast events come
let current = "list";

const overviewSoon = throttle(() => (current === "list" ? refreshOverview() : null), REFRESH_MS);
const jobSoon = throttle(refreshJob, REFRESH_MS);
const queuesSoon = throttle(() => (current === "queues" ? refreshQueues() : null), 1000);

function onJobEvent(change) {
  overviewSoon();
  queuesSoon();
  if (change.id === view.jobId && (!view.job || view.job.status !== change.status)) jobSoon();
}

async function followEvents() {
  let failures = 0;
  for (;;) {
    try {
      await sse("/events", (event) => event.event === "job" && onJobEvent(JSON.parse(event.data)), {
        onOpen: () => {
          failures = 0;
          setLive("live");
          overviewSoon(); // catch up on anything that changed while we were away
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
  for (;;) {
    overviewSoon();
    queuesSoon();
    if (view.jobId) jobSoon();
    await sleep(2000);
  }
}

function show(name) {
  current = name;
  for (const section of ["list", "job", "queues"]) $(`${section}-view`).hidden = section !== name;
  document.body.classList.toggle("on-job", name !== "list");
  for (const link of document.querySelectorAll(".nav a")) {
    link.setAttribute("aria-current", String(link.dataset.view === name));
  }
}

function route() {
  const hash = location.hash || "#/";
  const job = hash.match(/^#\/jobs\/([A-Za-z0-9_-]{1,64})$/);
  if (job) {
    show("job");
    showJob(job[1]);
    return;
  }
  stopLog();
  view.jobId = null;
  view.job = null;
  document.title = "procq";
  if (hash === "#/queues") {
    show("queues");
    refreshQueues();
    return;
  }
  show("list");
  readFilters(hash.startsWith("#/?") ? hash.slice(3) : "");
  refreshOverview();
}

function start() {
  setUpKeyDialog(toast);
  setUpSubmit();
  setUpList();
  setUpJob();
  renderSparkline();
  const typed = (name) => debounce((event) => setFilterText(name, event.target.value), 300);
  $("tag-filter").addEventListener("input", typed("tag"));
  $("search").addEventListener("input", typed("q"));
  window.addEventListener("hashchange", route);
  setInterval(() => {
    if (current === "list") renderList(); // keep "12s ago" and "in 5s" true
    else if (current === "job" && view.job && !["COMPLETED", "FAILED", "CANCELED"].includes(view.job.status)) {
      renderJob(view.job);
    }
  }, 1000);
  setInterval(() => (current === "queues" ? refreshQueues() : overviewSoon()), STATS_EVERY_MS);
  route();
  followEvents();
}

start();
