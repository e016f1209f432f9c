// The job page (#/jobs/<id>): state, details, per-attempt runs, webhook delivery, the live stderr and
// a preview of a text result, with Cancel, Download and Run again.
import { api, getJSON, sse } from "./api.js";
import { $, el, badge, bytes, commandLine, localTime, ran, seconds, sleep, toast, waitingFor } from "./dom.js";
import { STATES, TERMINAL } from "./dom.js";
import { view } from "./state.js";

export async function showJob(id) {
  if (view.jobId !== id) {
    stopLog();
    view.jobId = id;
    view.job = null;
    $("job-log").textContent = "";
    $("job-result").textContent = "";
    $("job-result").hidden = $("result-title").hidden = true;
    $("job-details").replaceChildren();
    $("job-runs").replaceChildren();
    $("runs-title").hidden = true;
    $("job-command").textContent = "";
    $("job-state").replaceChildren();
    $("job-waiting").textContent = "";
  }
  await refreshJob();
  if (view.job && !view.logAbort && view.jobId === id) followLog(id);
}

export async function refreshJob() {
  const id = view.jobId;
  if (!id) return;
  try {
    renderJob(await getJSON(`/jobs/${id}/status`));
  } catch (error) {
    $("job-command").textContent = error.status === 404 ? `No job ${id}` : error.message;
  }
}

export function stopLog() {
  if (view.logAbort) view.logAbort.abort();
  view.logAbort = null;
}

function delivery(job) {
  const d = job.webhook_delivery;
  if (!job.webhook) return null;
  if (!d) return TERMINAL.has(job.status) ? "not sent" : "sent when the job ends";
  const tries = `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`;
  if (d.state === "delivered") return `delivered ${localTime(d.delivered_at)} after ${tries}`;
  if (d.state === "failed") return `failed after ${tries}${d.last_error ? `: ${d.last_error}` : ""}`;
  const next = d.next_attempt_at ? `, next attempt ${localTime(d.next_attempt_at)}` : "";
  return `pending (${tries}${next})${d.last_error ? `; last error: ${d.last_error}` : ""}`;
}

export function renderJob(job) {
  if (job.id !== view.jobId) return;
  const before = view.job;
  view.job = job;
  const terminal = TERMINAL.has(job.status);
  $("job-state").replaceChildren(badge(job.status));
  $("job-waiting").textContent = waitingFor(job) || "";
  $("job-command").textContent = commandLine(job.args);
  document.title = `${STATES[job.status]?.word || job.status} · ${commandLine(job.args).slice(0, 40)} · procq`;
  $("cancel-job").disabled = terminal;
  $("download-result").disabled = job.status !== "COMPLETED";
  $("rerun-job").disabled = !terminal; // the API answers 409 for a job that has not ended
  $("rerun-job").title = terminal ? "Submit the same request again" : "Only a finished job can be run again";
  const usage = job.resources || {};
  const cpu = usage.cpu_user_seconds ?? null;
  const rows = [
    ["State", badge(job.status)],
    ["Exit code", job.exit_code],
    ["Error", job.error],
    ["Interrupted", job.interrupted],
    ["Submitted", localTime(job.enqueued_at)],
    ["Started", job.started_at ? localTime(job.started_at) : null],
    ["Completed", job.completed_at ? localTime(job.completed_at) : null],
    ["Ran for", ran(job) || null],
    ["Runs at", job.run_at ? localTime(job.run_at) : null],
    ["Attempts", job.max_attempts > 1 ? `${job.attempts} of at most ${job.max_attempts}` : job.attempts],
    ["Priority", job.priority],
    ["Queue", job.queue],
    ["Timeout", job.timeout_seconds ? `${job.timeout_seconds} s` : null],
    ["CPU time", cpu === null ? null : seconds(cpu + (usage.cpu_system_seconds || 0))],
    ["Peak memory", bytes(usage.peak_rss_bytes)],
    ["Wall time", seconds(usage.wall_seconds)],
    ["Tags", (job.tags || []).length ? job.tags.join(", ") : null],
    ["Result type", job.mime_type],
    ["Webhook", job.webhook],
    ["Webhook delivery", delivery(job)],
    ["Waits for", (job.after || []).length ? job.after.join(", ") : null],
    ["Owner", job.owner],
    ["Rerun of", job.rerun_of],
    ["PID", job.pid],
    ["ID", job.id],
  ];
  const details = $("job-details");
  details.replaceChildren();
  for (const [name, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    const dd = el("dd", {});
    dd.append(typeof value === "object" ? value : String(value));
    details.append(el("div", { "data-field": name }, el("dt", { text: name }), dd));
  }
  const argv = el("div", { class: "argv" }, el("dt", { text: "Arguments" }));
  argv.append(el("dd", {}, ...(job.args || []).map((a) => el("code", { text: a === "" ? '""' : a }))));
  details.append(argv);
  renderRuns(job.runs || []);
  if (job.status === "COMPLETED" && (!before || before.status !== "COMPLETED")) showResultPreview(job);
}

// One row per attempt, the latest last: a retried or interrupted job shows every run it had.
function renderRuns(runs) {
  $("runs-title").hidden = runs.length === 0;
  $("job-runs").replaceChildren(
    ...runs.map((run) =>
      el(
        "tr",
        { "data-attempt": String(run.attempt) },
        el("td", { class: "num", text: String(run.attempt) }),
        el("td", { text: run.started_at ? localTime(run.started_at) : "—" }),
        el("td", { class: "num", text: seconds(run.wall_seconds) || "" }),
        el("td", { class: "num", text: run.exit_code ?? "" }),
        el("td", { class: "run-error", text: run.error || "" }),
      ),
    ),
  );
}

async function followLog(id) {
  const abort = new AbortController();
  view.logAbort = abort;
  const pre = $("job-log");
  const state = $("log-state");
  let lastId = null;
  let failures = 0;
  state.textContent = "(following)";
  pre.dataset.placeholder = "(nothing written yet)";
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
      const empty = !pre.textContent;
      state.textContent = empty ? "(finished: the job wrote nothing to stderr)" : "(finished)";
      pre.dataset.placeholder = "(empty)";
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
    // The bytes are the command's stdout: decode them as UTF-8 whatever charset the type names (or not).
    const text = new TextDecoder("utf-8").decode(await response.arrayBuffer());
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
    const type = job.mime_type.split(";")[0];
    // A text result is UTF-8: say so, or whatever opens the file may guess another encoding.
    const blob = new Blob([await response.arrayBuffer()], {
      type: isText(type) && !/charset/i.test(job.mime_type) ? `${type};charset=utf-8` : job.mime_type,
    });
    const url = URL.createObjectURL(blob);
    const ext = { "application/json": "json", "text/csv": "csv", "text/html": "html" }[type];
    const link = el("a", { href: url, download: `${job.id}.${ext || (isText(type) ? "txt" : "bin")}` });
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
    toast(error.message);
  }
}

export function setUpJob() {
  $("cancel-job").addEventListener("click", cancelJob);
  $("download-result").addEventListener("click", downloadResult);
  $("rerun-job").addEventListener("click", rerunJob);
}
