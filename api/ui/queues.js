// The queues view (#/queues): each named queue's parallelism, paused state and counts, with Pause /
// Resume and a parallelism box (PUT /queues/{name}; run-time changes last until the server stops).
import { api, getJSON } from "./api.js";
import { $, el, toast } from "./dom.js";

export async function refreshQueues() {
  let answer;
  try {
    answer = await getJSON("/queues");
  } catch (error) {
    $("queues-note").textContent = `Could not read the queues: ${error.message}`;
    return;
  }
  $("queues-note").textContent = "";
  $("queues-body").replaceChildren(...(answer.queues || []).map(queueRow));
}

function queueRow(queue) {
  const size = el("input", { type: "number", min: "1", step: "1", "aria-label": `Parallelism of ${queue.name}` });
  size.value = String(queue.parallelism);
  const save = el("button", { type: "button", class: "ghost save", text: "Set" });
  save.addEventListener("click", () => update(queue.name, { parallelism: parseInt(size.value, 10) }));
  const toggle = el("button", {
    type: "button",
    class: queue.paused ? "primary resume" : "pause",
    text: queue.paused ? "Resume" : "Pause",
  });
  toggle.addEventListener("click", () => update(queue.name, { paused: !queue.paused }));
  return el(
    "tr",
    { "data-queue": queue.name, "data-paused": String(queue.paused) },
    el("td", { class: "name", text: queue.name }),
    el("td", { class: "state" }, el("span", { class: `qstate ${queue.paused ? "paused" : "open"}`, text: queue.paused ? "‖ paused" : "▶ running" })),
    el("td", { class: "num queued", text: String(queue.queued) }),
    el("td", { class: "num running", text: String(queue.running) }),
    el("td", { class: "parallelism" }, el("span", { class: "size-box" }, size, save)),
    el("td", {}, toggle),
  );
}

async function update(name, body) {
  try {
    await api(`/queues/${encodeURIComponent(name)}`, { method: "PUT", json: body });
    toast(`Queue ${name} updated`);
  } catch (error) {
    toast(`Could not change queue ${name}: ${error.message}`);
  }
  await refreshQueues();
}
