// The cluster's nodes on the overview (GET /nodes): name, address, slots, running jobs, state and last
// heartbeat. Hidden on a single machine (GET /nodes answers 404 there). A module of its own, like the
// GPU lanes: it needs nothing from the rest of the page but the API key the page keeps in localStorage.
const KEY_STORE = "procq.apiKey";
const EVERY_MS = 2000;

export function renderNodes(section, nodes) {
  section.hidden = false;
  section.querySelector("tbody").replaceChildren(...nodes.map(row));
}

function row(peer) {
  const tr = cell("tr", { class: `node ${peer.state}`, "data-node": peer.name });
  const heartbeat = cell("td", { class: "muted", text: ago(peer.heartbeat_at) });
  heartbeat.title = peer.heartbeat_at;
  tr.append(
    cell("td", { class: "node-name", text: peer.name }),
    cell("td", { class: "mono", text: peer.address || "–" }),
    cell("td", { class: "num", text: String(peer.slots) }),
    cell("td", { class: "num", text: String(peer.running) }),
    cell("td", {}, cell("span", { class: `node-state ${peer.state}`, text: peer.state })),
    heartbeat,
  );
  return tr;
}

function ago(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (Number.isNaN(seconds)) return "–";
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return new Date(iso).toLocaleString();
}

function cell(tag, attributes, child) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") element.textContent = value;
    else element.setAttribute(name, value);
  }
  if (child) element.append(child);
  return element;
}

async function refresh(section) {
  const key = localStorage.getItem(KEY_STORE);
  try {
    const response = await fetch("/nodes", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    if (response.status === 404) section.hidden = true; // a single machine: no nodes
    else if (response.ok) renderNodes(section, (await response.json()).nodes);
  } catch {
    // the server is away: the page says so elsewhere; the list keeps its last state
  }
}

export function startNodes(section) {
  refresh(section);
  setInterval(() => {
    if (!document.hidden) refresh(section);
  }, EVERY_MS);
}

const section = document.getElementById("cluster-nodes");
if (section) startNodes(section);
