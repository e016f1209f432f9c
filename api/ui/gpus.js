// The GPU lanes on the overview: one lane per GPU saying which job runs on it (GET /resources), and a
// meter per counted resource. Hidden on a server without --gpus or --resource. A module of its own: it
// needs nothing from the rest of the page but the API key the page keeps in localStorage.
const KEY_STORE = "procq.apiKey";
const EVERY_MS = 2000;

export function renderLanes(section, resources) {
  const gpus = resources.gpus || [];
  const counted = Object.entries(resources.resources || {});
  section.hidden = gpus.length === 0 && counted.length === 0;
  const lanes = gpus.map((gpu) => lane(gpu));
  const meters = counted.map(([name, units]) => meter(name, units));
  section.querySelector(".lanes").replaceChildren(...lanes, ...meters);
}

function lane(gpu) {
  const row = node("div", { class: `lane ${gpu.busy ? "busy" : "idle"}`, "data-gpu": gpu.id });
  const label = node("span", { class: "lane-name", text: `GPU ${gpu.id}` });
  if (gpu.name) label.title = gpu.name;
  let what;
  if (gpu.job_id) {
    what = node("a", { class: "lane-job", href: `#/jobs/${gpu.job_id}`, text: `▶ …${gpu.job_id.slice(-8)}` });
    what.title = gpu.job_id;
  } else {
    what = node("span", { class: "lane-job muted", text: gpu.busy ? "▶ busy (another key's job)" : "idle" });
  }
  row.append(label, what);
  return row;
}

function meter(name, units) {
  const row = node("div", { class: "lane counted", "data-resource": name });
  const bar = node("div", { class: "meter", role: "meter", "aria-label": `${name} in use` });
  const fill = node("span", {});
  fill.style.width = `${units.total ? Math.round((100 * units.in_use) / units.total) : 0}%`;
  bar.append(fill);
  row.append(node("span", { class: "lane-name", text: name }), bar, node("span", { class: "lane-job", text: `${units.in_use} of ${units.total} in use` }));
  return row;
}

function node(tag, attributes) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") element.textContent = value;
    else element.setAttribute(name, value);
  }
  return element;
}

async function refresh(section) {
  const key = localStorage.getItem(KEY_STORE);
  try {
    const response = await fetch("/resources", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    if (response.ok) renderLanes(section, await response.json());
  } catch {
    // the server is away: the page says so elsewhere; the lanes keep their last state
  }
}

export function startLanes(section) {
  refresh(section);
  setInterval(() => {
    if (!document.hidden) refresh(section);
  }, EVERY_MS);
}

const section = document.getElementById("gpu-lanes");
if (section) startLanes(section);
