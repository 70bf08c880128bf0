// The playground: the public API (/v1/models, /v1/videos, /v1/videos/plan) from the browser, nothing more.
// Everything the server or the user supplies is shown with textContent, never parsed as HTML.

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "hsa-video-api-key"; // sessionStorage: gone when the tab closes
const POLL_MS = 500;

class ApiError extends Error {
  constructor(status, error, retryAfter) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code;
    this.param = error?.param;
    this.retryAfter = retryAfter;
  }
}

const api = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",

  headers(extra = {}) {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : extra;
  },

  async request(method, path, body) {
    const init = { method, headers: this.headers() };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.headers = this.headers({ "Content-Type": "application/json" });
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, { message: "The server cannot be reached. Is it running?" });
    }
    const isJson = (response.headers.get("content-type") || "").includes("application/json");
    const data = isJson ? await response.json() : null;
    if (!response.ok) throw new ApiError(response.status, data?.error, response.headers.get("retry-after"));
    return data;
  },

  async blobUrl(path) {
    const response = await fetch(path, { headers: this.headers() });
    if (!response.ok) throw new ApiError(response.status, { message: `the video could not be downloaded (HTTP ${response.status})` });
    return URL.createObjectURL(await response.blob());
  },
};

// errors in plain words ------------------------------------------------------------------------------

function explain(error) {
  if (!(error instanceof ApiError)) return `Something went wrong: ${error.message}`;
  switch (error.status) {
    case 0: return error.message;
    case 401: return "This server needs an API key. Paste yours above.";
    case 429:
      if (error.code === "deadline_unreachable") return `The deadline cannot be met: ${error.message}`;
      return `Too many requests right now${error.retryAfter ? `; try again in ${error.retryAfter} s` : ""}. (${error.message})`;
    case 503: return `The server is not ready: ${error.message}`;
    default: return error.message;
  }
}

function notify(text) {
  const notice = $("notice");
  notice.textContent = text;
  notice.hidden = !text;
}

// models and the form --------------------------------------------------------------------------------

let models = [];

function currentModel() {
  return models.find((m) => m.id === $("model").value);
}

function fillSelect(select, options, selected) {
  select.replaceChildren(...options.map(([value, label]) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    option.selected = value === selected;
    return option;
  }));
}

function showModel() {
  const model = currentModel();
  if (!model) return;
  const limits = model.limits;
  fillSelect($("size"), limits.sizes.map((s) => [s, s]), limits.default_size);
  fillSelect($("length"), limits.seconds.map((s, i) => [s, `${s} s (${limits.num_frames[i] ?? limits.num_frames[0]} frames)`]),
    limits.seconds[0]);
  $("steps").placeholder = String(limits.default_steps);
  $("steps").max = String(limits.max_steps);
  $("guidance").placeholder = String(limits.guidance_scale);
  $("prompt").maxLength = limits.max_prompt_chars + 1; // one over, so the API's own message is what users see
  $("image-field").hidden = model.image_input === "unsupported";
  $("image-required").textContent = model.image_input === "required" ? "(required)" : "(optional: image-to-video)";
  if (model.image_input === "unsupported") clearImage();
  schedulePlan();
}

async function loadModels() {
  try {
    const list = await api.request("GET", "/v1/models");
    models = list.data;
    $("key-form").hidden = !api.key;
    if (!models.length) {
      notify("No worker serves a model yet; this page fills in once one does.");
      setTimeout(loadModels, 2000);
      return;
    }
    const previous = $("model").value;
    fillSelect($("model"), models.map((m) => [m.id, m.id]), previous || models[0].id);
    notify("");
    showModel();
    loadHistory();
  } catch (error) {
    if (error.status === 401) $("key-form").hidden = false;
    notify(explain(error));
  }
}

// the first frame ------------------------------------------------------------------------------------

let imageFile = null;

function setImage(file) {
  if (!file) return;
  imageFile = file;
  const preview = $("image-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("image-clear").hidden = false;
  $("drop-hint").textContent = file.name;
  schedulePlan();
}

function clearImage() {
  imageFile = null;
  $("image").value = "";
  $("image-preview").hidden = true;
  $("image-clear").hidden = true;
  $("drop-hint").textContent = "Drop an image here or choose one";
}

// requests -------------------------------------------------------------------------------------------

function requestFields(budgetOverride) {
  const fields = {
    prompt: $("prompt").value,
    model: $("model").value || undefined,
    size: $("size").value || undefined,
    seconds: $("length").value || undefined,
  };
  if ($("negative-prompt").value) fields.negative_prompt = $("negative-prompt").value;
  for (const [id, name, parse] of [["seed", "seed", parseInt], ["steps", "steps", parseInt], ["guidance", "guidance_scale", parseFloat]]) {
    const value = $(id).value;
    if (value !== "") fields[name] = parse(value);
  }
  const speed = document.querySelector('input[name="speed"]:checked').value;
  if (budgetOverride !== undefined) {
    fields.budget = budgetOverride;
  } else if (speed === "budget") {
    fields.budget = parseFloat($("budget").value);
  } else {
    fields.deadline_s = parseFloat($("deadline").value);
    fields.best_effort = true; // "as good as possible": accepted even when only the smallest budget could fit
  }
  return fields;
}

function asBody(fields) {
  if (!imageFile || $("image-field").hidden) return fields;
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) if (value !== undefined) form.append(name, String(value));
  form.append("input_reference", imageFile);
  return form;
}

let planTimer = null;
let planSequence = 0;

function schedulePlan() {
  clearTimeout(planTimer);
  planTimer = setTimeout(showPlan, 300);
}

async function showPlan() {
  const sequence = ++planSequence;
  const plan = $("plan");
  if (!$("prompt").value.trim() || !currentModel()) {
    plan.textContent = "";
    return;
  }
  const fields = { ...requestFields(), image_to_video: Boolean(imageFile) && !$("image-field").hidden };
  try {
    const result = await api.request("POST", "/v1/videos/plan", fields);
    if (sequence !== planSequence) return; // an older answer arriving late
    const now = Date.now() / 1000;
    const parts = [`Budget ${result.budget.toFixed(2)}${result.budget_source === "sla" ? " (chosen for your deadline)" : ""}`];
    if (result.predicted_start_at != null) parts.push(`starts in ~${Math.max(0, Math.round(result.predicted_start_at - now))} s`);
    if (result.predicted_completion_at != null) parts.push(`done in ~${Math.max(1, Math.round(result.predicted_completion_at - now))} s`);
    if (fields.deadline_s && result.predicted_completion_at > result.deadline_at) parts.push("the deadline cannot be met: it runs at the smallest budget");
    if (result.workers === 0) parts.push("the model's worker is starting");
    plan.textContent = parts.join(" · ");
    plan.classList.remove("error");
  } catch (error) {
    if (sequence !== planSequence) return;
    plan.textContent = explain(error);
    plan.classList.add("error");
  }
}

// jobs -----------------------------------------------------------------------------------------------

const views = new Map(); // video id → its view

function formatSeconds(value) {
  return value == null ? "—" : `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

class JobView {
  constructor(id, container) {
    this.id = id;
    this.element = $("job-template").content.firstElementChild.cloneNode(true);
    this.element.dataset.videoId = id;
    this.element.querySelector(".job-cancel").addEventListener("click", () => this.cancel());
    container.prepend(this.element);
    this.done = new Promise((resolve) => { this.resolveDone = resolve; });
    this.poll();
  }

  part(selector) {
    return this.element.querySelector(selector);
  }

  async poll() {
    try {
      const video = await api.request("GET", `/v1/videos/${encodeURIComponent(this.id)}`);
      this.render(video);
      if (["queued", "in_progress"].includes(video.status)) {
        setTimeout(() => this.poll(), POLL_MS);
      } else {
        await this.finish(video);
      }
    } catch (error) {
      this.part(".job-status").textContent = explain(error);
      if (error.status === 0 || error.status >= 500 || error.status === 429) setTimeout(() => this.poll(), 2000);
      else this.resolveDone(null);
    }
  }

  render(video) {
    this.video = video;
    this.part(".job-prompt").textContent = video.prompt;
    const budget = `budget ${video.budget.toFixed(2)}${video.budget_source === "sla" ? " (SLA)" : ""}`;
    this.part(".job-meta").textContent = `${video.model} · ${video.size} · ${video.seconds} s · ${video.steps} steps · seed ${video.seed} · ${budget}${video.image_to_video ? " · image-to-video" : ""}`;
    const progress = this.part(".progress");
    progress.setAttribute("aria-valuenow", String(video.progress));
    progress.querySelector(".bar").style.width = `${video.progress}%`;
    const now = Date.now() / 1000;
    let status = video.status.replace("_", " ");
    if (video.status === "queued" && video.predicted_start_at) {
      status += ` — starts in ~${Math.max(0, Math.round(video.predicted_start_at - now))} s`;
    } else if (video.status === "in_progress") {
      status += ` — ${video.progress} %`;
      if (video.started_at) status += `, ${Math.round(now - video.started_at)} s elapsed`;
      if (video.deadline_at && video.tier !== "batch") status += ` of ${Math.round(video.deadline_at - video.created_at)} s allowed`;
    } else if (video.status === "failed") {
      status += `: ${video.error?.message || "unknown error"}`;
    }
    this.part(".job-status").textContent = status;
    this.part(".job-cancel").hidden = !["queued", "in_progress"].includes(video.status);
    this.renderStats(video);
  }

  renderStats(video) {
    const rows = [
      ["Achieved compute", video.achieved_compute_fraction == null ? null : `${(100 * video.achieved_compute_fraction).toFixed(1)} % of the full sampler`],
      ["Token fraction", video.token_fraction == null ? null : video.token_fraction.toFixed(3)],
      ["Deadline met", video.sla_met == null ? null : (video.sla_met ? "yes" : "no")],
      ...Object.entries(video.timings || {}).map(([stage, seconds]) => [`Time: ${stage}`, formatSeconds(seconds)]),
    ];
    if (video.shadow_reference) {
      rows.push(["Shadow reference", `PSNR ${video.shadow_reference.psnr_db.toFixed(2)} dB · SSIM ${video.shadow_reference.ssim.toFixed(4)} vs budget 1.0`]);
    }
    this.part(".job-stats").replaceChildren(...rows.filter(([, value]) => value != null).flatMap(([name, value]) => {
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = value;
      return [term, detail];
    }));
  }

  async finish(video) {
    if (video.status === "completed") {
      try {
        const url = await api.blobUrl(`/v1/videos/${encodeURIComponent(this.id)}/content`);
        const player = this.part(".job-video");
        player.src = url;
        player.hidden = false;
        player.play().catch(() => {}); // autoplay may be refused; the controls remain
        const link = this.part(".job-download");
        link.href = url;
        link.download = `${this.id}.mp4`;
        link.hidden = false;
        this.url = url;
        if (!video.shadow_reference && video.budget < 1) this.watchShadow();
      } catch (error) {
        this.part(".job-status").textContent = explain(error);
      }
    }
    loadHistory();
    this.resolveDone(video);
  }

  async watchShadow(tries = 20) {
    // a sampled reduced-budget job gets its full-budget reference a little later
    await new Promise((resolve) => setTimeout(resolve, 1500));
    try {
      const video = await api.request("GET", `/v1/videos/${encodeURIComponent(this.id)}`);
      this.renderStats(video);
      if (!video.shadow_reference && tries > 1) this.watchShadow(tries - 1);
    } catch (error) { /* the stats stay as they are */ }
  }

  async cancel() {
    try {
      await api.request("DELETE", `/v1/videos/${encodeURIComponent(this.id)}`);
    } catch (error) {
      notify(explain(error));
    }
  }
}

function openJob(id) {
  $("job-empty").hidden = true;
  const existing = views.get(id);
  if (existing) {
    $("jobs").prepend(existing.element);
    return existing;
  }
  const view = new JobView(id, $("jobs"));
  views.set(id, view);
  return view;
}

async function submit(fields) {
  const video = await api.request("POST", "/v1/videos", asBody(fields));
  loadHistory();
  return openJob(video.id);
}

async function generate(event) {
  event.preventDefault();
  notify("");
  if (!$("prompt").value.trim()) {
    notify("Type a prompt first.");
    return;
  }
  const button = $("generate");
  button.disabled = true;
  try {
    $("compare-view").hidden = true;
    await submit(requestFields());
  } catch (error) {
    notify(explain(error));
  } finally {
    button.disabled = false;
  }
}

// compare two budgets --------------------------------------------------------------------------------

async function compare() {
  notify("");
  if (!$("prompt").value.trim()) {
    notify("Type a prompt first.");
    return;
  }
  const budgets = [parseFloat($("compare-a").value), parseFloat($("compare-b").value)];
  if ($("seed").value === "") $("seed").value = String(Math.floor(Math.random() * 2 ** 31)); // the same noise for both
  const button = $("compare");
  button.disabled = true;
  try {
    const jobs = [];
    for (const budget of budgets) jobs.push(await submit(requestFields(budget)));
    const videos = await Promise.all(jobs.map((job) => job.done));
    if (videos.every((video) => video?.status === "completed")) showComparison(jobs);
  } catch (error) {
    notify(explain(error));
  } finally {
    button.disabled = false;
  }
}

let comparing = null;

function showComparison(jobs) {
  const players = [$("compare-video-a"), $("compare-video-b")];
  jobs.forEach((job, index) => {
    players[index].src = job.url;
    const video = job.video;
    const seconds = video.timings?.total ?? video.timings?.denoise;
    $(index ? "compare-caption-b" : "compare-caption-a").textContent =
      `budget ${video.budget.toFixed(2)} · ${formatSeconds(seconds)} · compute ${(100 * (video.achieved_compute_fraction ?? 1)).toFixed(0)} %`;
  });
  $("compare-view").hidden = false;
  comparing = players;
  playBoth();
}

function playBoth() {
  if (!comparing) return;
  const [a, b] = comparing;
  b.currentTime = a.currentTime;
  Promise.all([a.play(), b.play()]).catch(() => {});
  requestAnimationFrame(drawDifference);
}

const scratch = [document.createElement("canvas"), document.createElement("canvas")];

function drawDifference() {
  if (!comparing || $("compare-view").hidden) return;
  const [a, b] = comparing;
  if (Math.abs(a.currentTime - b.currentTime) > 0.06) b.currentTime = a.currentTime; // keep them in step
  const width = a.videoWidth, height = a.videoHeight;
  if (width && height && b.videoWidth) {
    const frames = [a, b].map((player, index) => {
      const canvas = scratch[index];
      canvas.width = width;
      canvas.height = height;
      const context = canvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(player, 0, 0, width, height);
      return context.getImageData(0, 0, width, height);
    });
    const output = $("difference");
    output.width = width;
    output.height = height;
    const context = output.getContext("2d");
    const difference = context.createImageData(width, height);
    for (let i = 0; i < difference.data.length; i += 4) {
      for (let c = 0; c < 3; c++) difference.data[i + c] = Math.min(255, 4 * Math.abs(frames[0].data[i + c] - frames[1].data[i + c]));
      difference.data[i + 3] = 255;
    }
    context.putImageData(difference, 0, 0);
  }
  requestAnimationFrame(drawDifference);
}

// history --------------------------------------------------------------------------------------------

let historyLoading = false;

async function loadHistory() {
  if (historyLoading) return;
  historyLoading = true;
  try {
    const page = await api.request("GET", "/v1/videos?limit=20");
    $("history").replaceChildren(...page.data.map((video) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "history-item";
      button.dataset.videoId = video.id;
      const prompt = document.createElement("span");
      prompt.className = "history-prompt";
      prompt.textContent = video.prompt;
      const meta = document.createElement("span");
      meta.className = "subtle";
      meta.textContent = `${video.status.replace("_", " ")} · budget ${video.budget.toFixed(2)} · ${new Date(video.created_at * 1000).toLocaleTimeString()}`;
      button.append(prompt, meta);
      button.addEventListener("click", () => openJob(video.id));
      item.append(button);
      return item;
    }));
  } catch (error) {
    if (error.status !== 401) notify(explain(error));
  } finally {
    historyLoading = false;
  }
}

// wiring ---------------------------------------------------------------------------------------------

function start() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    api.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, api.key);
    loadModels();
  });
  $("api-key").value = api.key;
  $("model").addEventListener("change", showModel);
  for (const id of ["prompt", "size", "length", "steps", "deadline", "seed", "guidance", "negative-prompt"]) {
    $(id).addEventListener("input", schedulePlan);
  }
  $("budget").addEventListener("input", () => {
    $("budget-value").textContent = parseFloat($("budget").value).toFixed(2);
    document.querySelector('input[name="speed"][value="budget"]').checked = true;
    schedulePlan();
  });
  for (const radio of document.querySelectorAll('input[name="speed"]')) radio.addEventListener("change", schedulePlan);
  $("image").addEventListener("change", () => setImage($("image").files[0]));
  $("image-clear").addEventListener("click", () => { clearImage(); schedulePlan(); });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    setImage(event.dataTransfer.files[0]);
  });
  $("create-form").addEventListener("submit", generate);
  $("compare").addEventListener("click", compare);
  $("compare-play").addEventListener("click", playBoth);
  $("history-refresh").addEventListener("click", loadHistory);
  loadModels();
}

start();
