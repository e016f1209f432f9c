// The "+ New job" form: the command as a list (one box per argument, no shell) and the common options.
import { api, randomKey } from "./api.js";
import { $, el } from "./dom.js";

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

export function setUpSubmit() {
  $("new-job").addEventListener("click", openSubmit);
  $("add-arg").addEventListener("click", () => addArg().focus());
  $("submit-form").addEventListener("submit", submitJob);
  $("submit-close").addEventListener("click", () => $("submit-dialog").close());
}
