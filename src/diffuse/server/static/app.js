// The diffuse page: a form over the JSON API (text-to-image, img2img, inversion edit,
// inpainting with a mask painted on the image, ControlNet), live previews from the job's event
// stream, and a gallery of results. Plain JavaScript, no build step, nothing loaded from
// elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  models: [], job: null, abort: null,
  size: 64,        // the model's image side: uploads must have it, the mask is painted at it
  image: null,     // the uploaded image as a data: URL (sent as it is, never re-encoded)
  mask: null,      // Uint8Array [size * size]: 255 = fill, 0 = keep
  painting: false, last: null,
};
const BUTTON = { "text-to-image": "Generate", img2img: "Edit", inversion: "Edit",
  inpaint: "Inpaint", controlnet: "Generate" };

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

function currentModel() {
  return state.models.find((m) => m.name === $("model").value) || state.models[0];
}

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function showMode() {
  const m = mode();
  for (const el of document.querySelectorAll("[data-modes]")) {
    el.hidden = !el.dataset.modes.split(" ").includes(m);
  }
  $("generate").textContent = BUTTON[m];
  $("image-label").textContent = m === "controlnet"
    ? "Control image (the ControlNet's map is computed from it)" : "Input image";
}

function showControlNets(model) {
  const nets = model.controlnets || [];
  fillSelect($("controlnet"), nets.map((c) => c.name), nets.length ? nets[0].name : "");
  fillSelect($("control_kind"), [...new Set(nets.map((c) => c.kind))], nets.length ? nets[0].kind : "");
}

function showModel() {
  const model = currentModel();
  if (!model) return;
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.disabled = !model.tasks.includes(radio.value);
    if (radio.disabled && radio.checked) $("mode-text-to-image").checked = true;
  }
  showControlNets(model);
  if (state.size !== model.size) {
    state.size = model.size;
    state.image = null;
    for (const id of ["image-canvas", "mask-canvas"]) $(id).width = $(id).height = model.size;
  }
  $("brush").max = String(Math.max(1, Math.floor(model.size / 2)));
  if (!state.mask || state.mask.length !== model.size * model.size) resetMask();
  showMode();
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
  const m = mode();
  const n = parseInt($("n").value, 10) || 1;
  const seed = parseInt($("seed").value, 10) || 0;
  const body = {
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
  if (m === "text-to-image") return body;
  if (!state.image) {
    throw new Error(m === "controlnet" ? "Upload a control image first." : "Upload an input image first.");
  }
  if (m === "img2img") return Object.assign(body, { image: state.image, strength: parseFloat($("strength").value) });
  if (m === "inversion") {
    delete body.sampler;  // the inversion method's own sampler samples back
    return Object.assign(body, {
      image: state.image,
      source_prompt: $("source_prompt").value,
      inversion: $("inversion").value,
      refine: parseInt($("refine").value, 10) || 0,
    });
  }
  if (m === "inpaint") {
    if (!state.mask.some((v) => v)) throw new Error("Paint the region to fill on the image first.");
    return Object.assign(body, {
      image: state.image,
      mask: maskPng(),
      resample: parseInt($("resample").value, 10) || 1,
      feather: parseInt($("feather").value, 10) || 0,
    });
  }
  return Object.assign(body, {
    control_image: state.image,
    controlnet: $("controlnet").value || null,
    control_kind: $("control_kind").value || null,
    control_scale: parseFloat($("control_scale").value),
    control_start: parseFloat($("control_start").value),
    control_end: parseFloat($("control_end").value),
  });
}

// --- the input image and the mask painter --------------------------------------------------

function useImage(dataUrl) {
  const img = new Image();
  img.onload = () => {
    const size = state.size;
    const canvas = $("image-canvas");
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    if (img.naturalWidth !== size || img.naturalHeight !== size) {
      state.image = null;
      $("image-note").textContent = `The image is ${img.naturalWidth}x${img.naturalHeight} pixels; ` +
        `the model works at ${size}x${size} (images are not resized).`;
      $("image-note").className = "note error";
      return;
    }
    state.image = dataUrl;
    canvas.getContext("2d").drawImage(img, 0, 0);
    $("image-note").textContent = `${size}x${size} image loaded.`;
    $("image-note").className = "note";
  };
  img.onerror = () => {
    state.image = null;
    $("image-note").textContent = "That file is not an image the browser can read.";
    $("image-note").className = "note error";
  };
  img.src = dataUrl;
}

function useBlob(blob) {
  const reader = new FileReader();
  reader.onload = () => useImage(reader.result);
  reader.readAsDataURL(blob);
}

function resetMask() {
  state.mask = new Uint8Array(state.size * state.size);
  drawMask();
}

function drawMask() {
  const size = state.size;
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  const overlay = ctx.createImageData(size, size);
  let painted = 0;
  for (let i = 0; i < state.mask.length; i++) {
    if (!state.mask[i]) continue;
    painted++;
    overlay.data.set([255, 40, 40, 150], 4 * i);  // the region to fill, in translucent red
  }
  ctx.putImageData(overlay, 0, 0);
  canvas.dataset.painted = String(painted);
}

// The mask as the API takes it: a binary PNG of the model's size (255 = fill, 0 = keep).
function maskPng() {
  const size = state.size;
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(size, size);
  state.mask.forEach((v, i) => pixels.data.set([v, v, v, 255], 4 * i));
  ctx.putImageData(pixels, 0, 0);
  return canvas.toDataURL("image/png");
}

function maskPoint(event) {
  const rect = $("mask-canvas").getBoundingClientRect();
  return {
    x: (event.clientX - rect.left) * state.size / rect.width,
    y: (event.clientY - rect.top) * state.size / rect.height,
  };
}

// Set every mask pixel whose centre lies within the brush of the point (model pixels).
function stamp(p) {
  const size = state.size;
  const r = Math.max(0.75, parseInt($("brush").value, 10) / 2);
  const value = $("erase").checked ? 0 : 255;
  for (let y = Math.max(0, Math.floor(p.y - r)); y <= Math.min(size - 1, Math.ceil(p.y + r)); y++) {
    for (let x = Math.max(0, Math.floor(p.x - r)); x <= Math.min(size - 1, Math.ceil(p.x + r)); x++) {
      if ((x + 0.5 - p.x) ** 2 + (y + 0.5 - p.y) ** 2 <= r * r) state.mask[y * size + x] = value;
    }
  }
}

function strokeTo(p) {
  const from = state.last || p;
  const steps = Math.max(1, Math.ceil(2 * Math.hypot(p.x - from.x, p.y - from.y)));
  for (let i = 1; i <= steps; i++) {
    stamp({ x: from.x + (p.x - from.x) * i / steps, y: from.y + (p.y - from.y) * i / steps });
  }
  state.last = p;
  drawMask();
}

function startPainting(event) {
  event.preventDefault();
  $("mask-canvas").setPointerCapture(event.pointerId);
  state.painting = true;
  state.last = null;
  strokeTo(maskPoint(event));
}

function paint(event) {
  if (state.painting) strokeTo(maskPoint(event));
}

function stopPainting() {
  state.painting = false;
  state.last = null;
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

function taskCaption(p) {
  if (p.task === "img2img") return ` · img2img, strength ${p.strength}`;
  if (p.task === "inversion") return ` · inversion (${p.inversion}) from "${p.source_prompt}"`;
  if (p.task === "inpaint") {
    return ` · inpaint, mask ${p.mask_hash}, resample ${p.resample}, feather ${p.feather}`;
  }
  if (p.controlnet) return ` · ControlNet ${p.control_kind} ×${p.control_scale}, control ${p.control_hash}`;
  return "";
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
    ` · ${p.size}px · ${p.model}` + taskCaption(p);
  const link = document.createElement("a");
  link.href = url;
  link.download = `diffuse-${p.seed}.png`;
  link.textContent = "Download";
  const reuse = document.createElement("button");
  reuse.type = "button";
  reuse.className = "reuse";
  reuse.textContent = "Use as input";
  reuse.addEventListener("click", () => {
    if (mode() === "text-to-image") {
      $("mode-img2img").checked = true;
      showMode();
    }
    useBlob(blob);
  });
  caption.append(" ", link, " ", reuse);
  card.append(img, caption);
  $("gallery").prepend(card);
}

async function generate(event) {
  event.preventDefault();
  $("generate").disabled = true;
  setStatus("Queued…");
  $("progress").value = 0;
  try {
    const job = await (await api("/api/jobs/" + mode(), {
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
for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", showMode);
}
$("image-file").addEventListener("change", () => {
  if ($("image-file").files.length) useBlob($("image-file").files[0]);
});
$("mask-canvas").addEventListener("pointerdown", startPainting);
$("mask-canvas").addEventListener("pointermove", paint);
$("mask-canvas").addEventListener("pointerup", stopPainting);
$("mask-canvas").addEventListener("pointercancel", stopPainting);
$("clear-mask").addEventListener("click", resetMask);
$("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });
resetMask();
showMode();
$("cancel").addEventListener("click", cancel);
loadModels();
