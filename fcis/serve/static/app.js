// fcis serve page: upload a photo to /v1/predict, draw the returned COCO RLE masks on a canvas.
// The score slider and the class toggles redraw from the cached masks, without a new request.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("fcis-api-key") || "", classes: [], threshold: 0,
                result: null, bitmap: null, layers: [], hidden: new Set(), fileName: "image" };

function headers() { return state.key ? { "X-API-Key": state.key } : {}; }

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

// The colours of fcis.visualize.instance_colors: hues spread by the golden ratio.
function instanceColor(i) {
  const h = (0.1 + i * 0.618033988749895) % 1, s = 0.85, v = i % 2 === 0 ? 0.95 : 0.75;
  const k = Math.floor(h * 6), f = h * 6 - k, p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
  const [r, g, b] = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][k % 6];
  return [Math.round(r * 255), Math.round(g * 255), Math.round(b * 255)];
}

// pycocotools' compressed RLE string -> run lengths (column-major, starting with a run of zeros).
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x -= 2 ** (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// One instance's mask as a small coloured, half-transparent canvas over the mask's extent.
function maskLayer(seg, color) {
  const [H] = seg.size, counts = rleCounts(seg.counts);
  let x0 = Infinity, x1 = -1, y0 = Infinity, y1 = -1, pos = 0;
  const runs = [];
  counts.forEach((n, i) => {
    if (i % 2 === 1 && n > 0) {
      runs.push([pos, pos + n]);
      const ca = Math.floor(pos / H), cb = Math.floor((pos + n - 1) / H);
      x0 = Math.min(x0, ca); x1 = Math.max(x1, cb);
      if (ca === cb) { y0 = Math.min(y0, pos % H); y1 = Math.max(y1, (pos + n - 1) % H); }
      else { y0 = 0; y1 = H - 1; }
    }
    pos += n;
  });
  if (x1 < 0) return null;
  const w = x1 - x0 + 1, h = y1 - y0 + 1;
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h), d = img.data;
  for (const [a, b] of runs) {
    for (let idx = a; idx < b; idx++) {
      const x = Math.floor(idx / H) - x0, y = (idx % H) - y0, o = 4 * (y * w + x);
      d[o] = color[0]; d[o + 1] = color[1]; d[o + 2] = color[2]; d[o + 3] = 128;
    }
  }
  ctx.putImageData(img, 0, 0);
  return { canvas, x: x0, y: y0 };
}

function visible(inst) {
  return inst.score >= Number($("score-slider").value) && !state.hidden.has(inst.category_id);
}

function draw() {
  const canvas = $("overlay"), ctx = canvas.getContext("2d");
  $("score-value").textContent = Number($("score-slider").value).toFixed(2);
  if (!state.bitmap) return;
  ctx.drawImage(state.bitmap, 0, 0);
  const instances = state.result ? state.result.instances : [];
  const shown = instances.map((inst, i) => [inst, i]).filter(([inst]) => visible(inst));
  for (const [, i] of shown) {
    const layer = state.layers[i];
    if (layer) ctx.drawImage(layer.canvas, layer.x, layer.y);
  }
  if ($("show-boxes").checked) {
    const lw = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 400));
    const font = Math.max(12, Math.round(Math.max(canvas.width, canvas.height) / 45));
    ctx.font = `${font}px sans-serif`;
    ctx.textBaseline = "top";
    for (const [inst, i] of [...shown].reverse()) {   // the highest score's label drawn last, on top
      const [x, y, w, h] = inst.bbox, [r, g, b] = instanceColor(i), text = `${inst.category} ${inst.score.toFixed(2)}`;
      ctx.lineWidth = lw;
      ctx.strokeStyle = `rgb(${r},${g},${b})`;
      ctx.strokeRect(x, y, w, h);
      const tw = ctx.measureText(text).width + 6, ty = y >= font + 4 ? y - font - 4 : y;
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(x, ty, tw, font + 4);
      ctx.fillStyle = "#000";
      ctx.fillText(text, x + 3, ty + 2);
    }
  }
  canvas.dataset.shown = String(shown.length);
  if (state.result) {
    setStatus(`${shown.length} of ${instances.length} instances shown ` +
              `(${state.result.image.width}×${state.result.image.height}, ${state.result.time_ms} ms)`);
  }
}

function buildToggles() {
  const box = $("class-toggles");
  box.querySelectorAll("label").forEach((l) => l.remove());
  const counts = new Map();
  for (const inst of state.result ? state.result.instances : []) counts.set(inst.category_id, (counts.get(inst.category_id) || 0) + 1);
  const classes = [...state.classes];
  for (const [id] of counts) {
    if (!classes.some((c) => c.id === id)) classes.push({ id, name: String(id) });
  }
  for (const c of classes) {
    const label = document.createElement("label"), input = document.createElement("input");
    input.type = "checkbox"; input.checked = !state.hidden.has(c.id); input.dataset.categoryId = String(c.id);
    input.addEventListener("change", () => { if (input.checked) state.hidden.delete(c.id); else state.hidden.add(c.id); draw(); });
    label.append(input, ` ${c.name} (${counts.get(c.id) || 0})`);
    box.append(label);
  }
}

async function loadModel() {
  const res = await fetch("/v1/model", { headers: headers() });
  if (res.status === 401) {
    $("key-row").hidden = false;
    $("model-info").textContent = "this server needs an API key";
    return;
  }
  if (!res.ok) { $("model-info").textContent = `model information unavailable (${res.status})`; return; }
  const info = await res.json();
  $("key-row").hidden = true;
  state.classes = info.classes;
  state.threshold = info.score_threshold;
  const slider = $("score-slider");
  slider.min = String(Math.min(info.score_threshold, 1));
  slider.value = slider.min;
  $("model-info").textContent = `${info.name} · ${info.backend} · ${info.classes.length} classes`;
  buildToggles();
  draw();
}

async function predict(file) {
  state.fileName = (file.name || "image").replace(/\.[^.]*$/, "") || "image";
  setStatus(`Sending ${file.name || "the photo"}…`);
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (e) {
    try { bitmap = await createImageBitmap(file); }      // browsers without the option
    catch (e2) { bitmap = null; }                         // not an image it can show; the server says why
  }
  const form = new FormData();
  form.append("image", file, file.name || "image");
  let res, body;
  try {
    res = await fetch("/v1/predict", { method: "POST", body: form, headers: headers() });
    body = await res.json();
  } catch (e) {
    setStatus(`Request failed: ${e}`, true);
    return;
  }
  if (!res.ok) {
    if (res.status === 401) $("key-row").hidden = false;
    setStatus(`${res.status}: ${body.detail || JSON.stringify(body)}`, true);
    return;
  }
  if (!bitmap) { setStatus("The server read the image but this browser cannot display it.", true); return; }
  state.result = body;
  state.bitmap = bitmap;
  const canvas = $("overlay");
  canvas.width = body.image.width; canvas.height = body.image.height;
  state.layers = body.instances.map((inst, i) => maskLayer(inst.segmentation, instanceColor(i)));
  $("download").disabled = false;
  buildToggles();
  draw();
}

function setup() {
  $("file-input").addEventListener("change", (e) => { if (e.target.files[0]) predict(e.target.files[0]); });
  const zone = $("drop-zone");
  for (const target of [zone, $("overlay")]) {
    target.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    target.addEventListener("dragleave", () => zone.classList.remove("over"));
    target.addEventListener("drop", (e) => {
      e.preventDefault(); zone.classList.remove("over");
      if (e.dataTransfer.files[0]) predict(e.dataTransfer.files[0]);
    });
  }
  $("score-slider").addEventListener("input", draw);
  $("show-boxes").addEventListener("change", draw);
  $("download").addEventListener("click", () => {
    const blob = new Blob([JSON.stringify(state.result, null, 1)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = `${state.fileName}.json`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  $("key-save").addEventListener("click", () => {
    state.key = $("api-key").value.trim();
    sessionStorage.setItem("fcis-api-key", state.key);
    loadModel();
  });
  loadModel();
}

setup();
