// The diffuse page: a form over the JSON API, live previews from the job's event stream, and a
// gallery of results. Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], job: null, abort: null };

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const token = $("token").value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const response = await fetch(path, opts);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    if (response.status === 429) {
      message += " (retry after " + (response.headers.get("Retry-After") || "?") + " s)";
    }
    throw new Error(message);
  }
  return response;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => {
    const option = document.createElement("option");
    option.value = String(v);
    option.textContent = String(v);
    option.selected = String(v) === String(chosen);
    return option;
  }));
}

function showModel() {
  const model = state.models.find((m) => m.name === $("model").value) || state.models[0];
  if (!model) return;
  fillSelect($("sampler"), model.samplers, model.defaults.sampler);
  fillSelect($("schedule"), model.schedules, model.defaults.schedule);
  fillSelect($("size"), [model.size], model.size);
  $("steps").value = model.defaults.steps;
  $("steps").max = model.limits.max_steps;
  $("guidance").value = model.defaults.guidance;
  $("n").max = model.limits.max_images;
}

async function loadModels() {
  try {
    state.models = await (await api("/api/models")).json();
    fillSelect($("model"), state.models.map((m) => m.name), state.models[0].name);
    showModel();
    setStatus("Ready.");
  } catch (e) {
    setStatus("Could not list the models: " + e.message, true);
  }
}

function request() {
  const n = parseInt($("n").value, 10) || 1;
  const seed = parseInt($("seed").value, 10) || 0;
  return {
    model: $("model").value,
    prompt: $("prompt").value,
    negative_prompt: $("negative_prompt").value,
    sampler: $("sampler").value,
    schedule: $("schedule").value,
    steps: parseInt($("steps").value, 10),
    guidance: parseFloat($("guidance").value),
    size: parseInt($("size").value, 10),
    seeds: Array.from({ length: n }, (_, i) => seed + i),
  };
}

// Server-Sent Events read with fetch, so that the token goes in a header (EventSource cannot).
async function follow(job, onEvent) {
  state.abort = new AbortController();
  const response = await api(job.events_url, { signal: state.abort.signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length && onEvent(event, JSON.parse(data.join("\n")))) {
        state.abort.abort();
        return;
      }
    }
  }
}

async function addResult(job, image) {
  const blob = await (await api(image.url)).blob();
  const url = URL.createObjectURL(blob);
  const card = document.createElement("figure");
  card.className = "result";
  card.dataset.job = job.id;
  card.dataset.index = String(image.index);
  const img = document.createElement("img");
  img.src = url;
  img.alt = image.params.prompt;
  const caption = document.createElement("figcaption");
  const p = image.params;
  caption.textContent = `"${p.prompt}"` + (p.negative_prompt ? ` not "${p.negative_prompt}"` : "") +
    ` · seed ${p.seed} · ${p.sampler}/${p.schedule} · ${p.steps} steps · guidance ${p.guidance}` +
    ` · ${p.size}px · ${p.model}`;
  const link = document.createElement("a");
  link.href = url;
  link.download = `diffuse-${p.seed}.png`;
  link.textContent = "Download";
  caption.append(" ", link);
  card.append(img, caption);
  $("gallery").prepend(card);
}

async function generate(event) {
  event.preventDefault();
  $("generate").disabled = true;
  setStatus("Queued…");
  $("progress").value = 0;
  try {
    const job = await (await api("/api/jobs/text-to-image", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request()),
    })).json();
    state.job = job;
    $("cancel").disabled = false;
    let final = null;
    await follow(job, (name, data) => {
      if (name === "progress") {
        $("progress").max = data.steps;
        $("progress").value = data.step;
        setStatus(data.status === "queued" ? "Queued…" : `Step ${data.step} of ${data.steps}`);
        if (data.preview) {
          $("preview").src = data.preview;
          $("preview").dataset.count = String(parseInt($("preview").dataset.count, 10) + 1);
        }
        return false;
      }
      final = data;
      return true;
    });
    if (final && final.status === "done") {
      for (const image of final.images) await addResult(final, image);
      setStatus("Done.");
    } else if (final) {
      setStatus(final.status + (final.error ? ": " + final.error : ""), final.status === "failed");
    }
  } catch (e) {
    if (e.name !== "AbortError") setStatus(e.message, true);
  } finally {
    state.job = null;
    $("generate").disabled = false;
    $("cancel").disabled = true;
  }
}

async function cancel() {
  if (!state.job) return;
  try {
    await api("/api/jobs/" + state.job.id, { method: "DELETE" });
  } catch (e) {
    setStatus(e.message, true);
  }
}

$("token").value = sessionStorage.getItem("diffuse-token") || "";
$("token").addEventListener("change", () => {
  sessionStorage.setItem("diffuse-token", $("token").value.trim());
  loadModels();
});
$("model").addEventListener("change", showModel);
$("dice").addEventListener("click", () => {
  $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
});
$("form").addEventListener("submit", generate);
$("cancel").addEventListener("click", cancel);
loadModels();
