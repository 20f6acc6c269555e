// rtvi's web page: a client of the service's own API, nothing more (no framework, no build step).
// Upload -> generate with stream=true (SSE) -> the timeline fills from the search index as chunks land.

const $ = (selector) => document.querySelector(selector);
const service = document.body.dataset.service;
const KEY_STORE = "rtvi-api-key";
let apiKey = sessionStorage.getItem(KEY_STORE);
let modelId = null;

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code || status}: ${message}`);
    this.status = status;
  }
}

// --- the API, with the key asked once ---------------------------------------------------------
let keyAsked = null; // one dialog, however many requests were refused at once

function askKey(refused) {
  keyAsked ??= new Promise((resolve) => {
    $("#key-error").hidden = !refused;
    $("#api-key").value = "";
    $("#key-form").onsubmit = () => {
      apiKey = $("#api-key").value.trim();
      sessionStorage.setItem(KEY_STORE, apiKey);
      $("#forget-key").hidden = false;
      keyAsked = null;
      resolve();
    };
    $("#key-dialog").showModal();
  });
  return keyAsked;
}

function authHeaders(headers = {}) {
  return apiKey ? { ...headers, Authorization: `Bearer ${apiKey}` } : headers;
}

async function errorOf(status, text) {
  let body = {};
  try {
    body = JSON.parse(text);
  } catch {
    // not the contract's {code, message}: keep the status
  }
  return new ApiError(status, body.code, body.message || text.slice(0, 200) || "request failed");
}

async function api(path, { method = "GET", json } = {}) {
  for (;;) {
    const headers = authHeaders(json === undefined ? {} : { "Content-Type": "application/json" });
    const body = json === undefined ? undefined : JSON.stringify(json);
    const response = await fetch(path, { method, headers, body });
    if (response.status === 401) {
      await askKey(apiKey !== null);
      continue;
    }
    if (!response.ok) throw await errorOf(response.status, await response.text());
    return response;
  }
}

const apiJson = async (path, options) => (await api(path, options)).json();

// <img> and <video> cannot send a header: with a key, their bytes come through fetch as a blob.
async function mediaUrl(path) {
  if (!apiKey) return path;
  return URL.createObjectURL(await (await api(path)).blob());
}

function thumbnail(url) {
  const img = document.createElement("img");
  img.alt = "";
  if (url) {
    mediaUrl(url).then(
      (src) => (img.src = src),
      () => img.classList.add("missing"),
    );
  }
  return img;
}

// Server-Sent Events from a fetch response (EventSource can neither POST nor send a key).
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n|\r(?!$)/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

// --- small helpers ----------------------------------------------------------------------------
function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function timeOf(value) {
  // API times are seconds into a file ("10.0") or ISO-8601 wall clock: both order and print.
  const seconds = Number(value);
  return Number.isFinite(seconds) ? seconds : Date.parse(value) / 1000;
}

function shownTime(value) {
  const seconds = Number(value);
  if (!Number.isFinite(seconds)) return new Date(value).toLocaleString();
  const m = Math.floor(seconds / 60);
  return `${m}:${String(Math.floor(seconds % 60)).padStart(2, "0")}`;
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function say(selector, text, isError = false) {
  const node = $(selector);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// Some work for the user: its failure is said in `status` rather than thrown.
async function attempt(status, work) {
  try {
    await work();
  } catch (error) {
    say(status, error.message, true);
  }
}

function button(label, status, work) {
  const node = element("button", { type: "button" }, label);
  node.onclick = (e) => {
    e.stopPropagation();
    node.disabled = true;
    attempt(status, work).finally(() => (node.disabled = false));
  };
  return node;
}

// --- files and their timelines ----------------------------------------------------------------
const files = new Map(); // id -> file info
const seen = new Map(); // asset id -> Map(start_time -> chunk as the generate stream reported it)
let shownAsset = null;

async function loadFiles() {
  const { data } = await apiJson("/v1/files?purpose=vision");
  files.clear();
  const list = $("#file-list");
  list.replaceChildren();
  for (const file of data) {
    files.set(file.id, file);
    const item = element("li", { "data-file-id": file.id }, file.filename);
    item.onclick = () => showTimeline(file.id);
    item.classList.toggle("selected", file.id === shownAsset);
    list.append(item);
  }
}

async function showTimeline(assetId) {
  shownAsset = assetId;
  for (const item of $("#file-list").children) {
    item.classList.toggle("selected", item.dataset.fileId === assetId);
  }
  $("#timeline-section").hidden = false;
  $("#timeline-title").textContent = files.get(assetId)?.filename ?? assetId;
  await refreshTimeline(assetId);
}

// The index's entries (thumbnails, captions) with what the generate stream said (alerts, chunks
// not indexed yet). -> how many chunks the index holds.
async function refreshTimeline(assetId) {
  const { data } = await apiJson(`/v1/search/chunks?asset_id=${encodeURIComponent(assetId)}&limit=1000`);
  if (assetId !== shownAsset) return data.length;
  const chunks = new Map(data.map((hit) => [hit.start_time, { ...hit }]));
  for (const [start, reported] of seen.get(assetId) ?? []) {
    chunks.set(start, { ...reported, ...chunks.get(start), alert: reported.alert });
  }
  const timeline = $("#timeline");
  timeline.replaceChildren();
  for (const chunk of [...chunks.values()].sort((a, b) => timeOf(a.start_time) - timeOf(b.start_time))) {
    const card = element(
      "figure",
      { class: chunk.alert ? "chunk alert" : "chunk", "data-start-time": chunk.start_time },
      thumbnail(chunk.thumbnail_url),
      element("figcaption", { class: "meta" }, `${shownTime(chunk.start_time)} – ${shownTime(chunk.end_time)}`),
    );
    if (chunk.caption) card.append(element("p", { class: "caption" }, chunk.caption));
    card.onclick = () => play({ ...chunk, asset_id: assetId, source: files.get(assetId)?.filename });
    timeline.append(card);
  }
  return data.length;
}

function uploadFile(file) {
  // XMLHttpRequest, not fetch: only it reports upload progress.
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("purpose", "vision");
    form.append("media_type", file.type.startsWith("image/") ? "image" : "video");
    form.append("file", file, file.name);
    const request = new XMLHttpRequest();
    const progress = $("#upload-progress");
    request.open("POST", "/v1/files");
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.upload.onprogress = (e) => {
      if (e.lengthComputable) progress.value = e.loaded / e.total;
    };
    request.onload = async () => {
      if (request.status === 401) {
        await askKey(apiKey !== null);
        uploadFile(file).then(resolve, reject);
      } else if (request.status >= 300) {
        reject(await errorOf(request.status, request.responseText));
      } else {
        resolve(JSON.parse(request.responseText));
      }
    };
    request.onerror = () => reject(new Error("the upload failed (network)"));
    progress.hidden = false;
    progress.value = 0;
    request.send(form);
  });
}

async function processFile(assetId, chunkSeconds, prompt) {
  const body = { id: assetId, model: modelId, chunk_duration: chunkSeconds, stream: true };
  if (service === "vlm") body.prompt = prompt;
  const path = service === "vlm" ? "/v1/generate_captions" : "/v1/generate_video_embeddings";
  const reported = new Map();
  seen.set(assetId, reported);
  const response = await api(path, { method: "POST", json: body });
  for await (const event of events(response)) {
    for (const chunk of event.chunk_responses ?? []) {
      reported.set(chunk.start_time, {
        start_time: chunk.start_time,
        end_time: chunk.end_time,
        caption: chunk.content || null,
        alert: chunk.incident_detected === true,
      });
    }
    say("#timeline-status", `${reported.size} chunk(s) processed…`);
    await refreshTimeline(assetId);
  }
  // Index writes trail the results a little: wait for them, briefly.
  for (let tries = 0; tries < 40 && (await refreshTimeline(assetId)) < reported.size; tries++) await wait(250);
  say("#timeline-status", `${reported.size} chunk(s) processed.`);
}

async function onUpload(e) {
  e.preventDefault();
  const file = $("#file").files[0];
  if (!file) return;
  try {
    say("#upload-status", `Uploading ${file.name}…`);
    const added = await uploadFile(file);
    say("#upload-status", `${added.filename} uploaded; processing…`);
    await loadFiles();
    await showTimeline(added.id);
    await processFile(added.id, Number($("#chunk").value) || 0, $("#prompt").value);
    say("#upload-status", `${added.filename} is searchable.`);
  } catch (error) {
    say("#upload-status", error.message, true);
  }
}

// --- search and the player --------------------------------------------------------------------
async function onSearch(e) {
  e.preventDefault();
  const query = $("#query").value.trim();
  if (!query) return;
  say("#search-status", "Searching…");
  try {
    const { data } = await apiJson("/v1/search", { method: "POST", json: { query, top_k: 12 } });
    const results = $("#results");
    results.replaceChildren();
    for (const hit of data) {
      const item = element(
        "li",
        {
          class: "result",
          "data-asset-id": hit.asset_id,
          "data-stream-id": hit.stream_id,
          "data-start-time": hit.start_time,
        },
        thumbnail(hit.thumbnail_url),
        element(
          "div",
          { class: "meta" },
          element("span", { class: "score" }, hit.score.toFixed(3)),
          element("strong", {}, hit.source),
          ` ${shownTime(hit.start_time)}`,
        ),
      );
      if (hit.caption) item.append(element("p", { class: "caption" }, hit.caption));
      item.onclick = () => play(hit);
      results.append(item);
    }
    say("#search-status", data.length ? `${data.length} moment(s)` : "Nothing indexed matches yet.");
  } catch (error) {
    say("#search-status", error.message, true);
  }
}

// A moment of a file (played from its start) or of a live stream (whose chunks are not recorded: the
// player shows the chunk's picture).
async function play(hit) {
  const player = $("#player");
  $("#player-section").hidden = false;
  $("#player-title").textContent = `${hit.source ?? hit.asset_id} from ${shownTime(hit.start_time)}`;
  delete player.dataset.assetId;
  delete player.dataset.streamId;
  if (hit.stream_id) {
    player.dataset.streamId = hit.stream_id;
    player.onloadedmetadata = null;
    player.removeAttribute("src");
    player.load();
    player.poster = hit.thumbnail_url ? await mediaUrl(hit.thumbnail_url) : "";
    $("#player-title").textContent += ` to ${shownTime(hit.end_time)} (live: not recorded)`;
  } else {
    const from = hit.start_offset ?? timeOf(hit.start_time);
    player.dataset.assetId = hit.asset_id;
    player.removeAttribute("poster");
    player.onloadedmetadata = () => {
      player.currentTime = from;
      player.play().catch(() => {}); // autoplay may be refused; the controls remain
    };
    player.src = await mediaUrl(`/v1/files/${encodeURIComponent(hit.asset_id)}/content`);
  }
  player.scrollIntoView({ block: "nearest" });
}

// --- live streams -----------------------------------------------------------------------------
const streamNames = new Map(); // stream id -> what the page calls it

async function loadStreams() {
  const streams = await apiJson("/v1/streams/get-stream-info");
  const list = $("#stream-list");
  const items = [];
  streamNames.clear();
  for (const stream of streams) {
    const name = stream.description || stream.id;
    streamNames.set(stream.id, name);
    const { data } = await apiJson(`/v1/search/chunks?stream_id=${encodeURIComponent(stream.id)}&limit=6`);
    const latest = element("div", { class: "stream-chunks" }, ...data.map((hit) => thumbnail(hit.thumbnail_url)));
    const remove = button("Remove", "#stream-status", () => removeStream(stream.id, name));
    items.push(element("li", { "data-stream-id": stream.id }, name, remove, latest));
  }
  list.replaceChildren(...items);
  if (!streams.length) list.append(element("li", {}, "No live streams: add a camera above."));
  fillStreamChoice();
}

// The rule form's stream choice, rebuilt only when the streams change (not under an open menu).
function fillStreamChoice() {
  const select = $("#rule-stream");
  const ids = [...streamNames.keys()].join("\n");
  if (select.dataset.ids === ids) return;
  const chosen = select.value;
  select.replaceChildren(
    element("option", { value: "" }, "all streams"),
    ...[...streamNames].map(([id, name]) => element("option", { value: id }, name)),
  );
  select.value = streamNames.has(chosen) ? chosen : "";
  select.dataset.ids = ids;
}

async function pollStreams() {
  for (;;) {
    await wait(5000);
    if (document.visibilityState === "visible") await loadStreams().catch(() => {});
  }
}

async function onAddStream(e) {
  e.preventDefault();
  const stream = { liveStreamUrl: $("#stream-url").value.trim(), description: $("#stream-name").value.trim() };
  say("#stream-status", "Connecting to the camera…");
  await attempt("#stream-status", async () => {
    const { results, errors } = await apiJson("/v1/streams/add", { method: "POST", json: { streams: [stream] } });
    if (errors.length) throw new Error(errors[0].error);
    $("#stream-form").reset();
    say("#stream-status", `${stream.description || results[0].id} added.`);
    await loadStreams();
  });
}

async function removeStream(id, name) {
  await api(`/v1/streams/delete/${encodeURIComponent(id)}`, { method: "DELETE" });
  say("#stream-status", `${name} removed.`);
  await loadStreams();
}

// --- alert rules and their incidents (the embed service) --------------------------------------
async function loadRules() {
  const { data } = await apiJson("/v1/alerts/rules");
  const list = $("#rule-list");
  list.replaceChildren(...data.map(ruleItem));
  if (!data.length) list.append(element("li", {}, "No rules: add one to be told when a stream shows something."));
}

function ruleItem(rule) {
  const where = rule.stream_ids?.map((id) => streamNames.get(id) ?? id).join(", ") ?? "all streams";
  const what = `“${rule.query ?? "an image"}” on ${where}, at most every ${rule.cooldown_s} s`;
  const change = (request) => async () => {
    await api(`/v1/alerts/rules/${encodeURIComponent(rule.id)}`, request);
    say("#rule-status", "");
    await loadRules();
  };
  const pause = change({ method: "PATCH", json: { paused: !rule.paused } });
  return element(
    "li",
    { "data-rule-id": rule.id, "data-paused": rule.paused },
    element("strong", {}, rule.name),
    element("span", { class: "rule-what" }, what),
    rule.paused ? element("span", { class: "tag" }, "paused") : "",
    button(rule.paused ? "Resume" : "Pause", "#rule-status", pause),
    button("Delete", "#rule-status", change({ method: "DELETE" })),
  );
}

async function onAddRule(e) {
  e.preventDefault();
  const rule = { name: $("#rule-name").value.trim() };
  if ($("#rule-query").value.trim()) rule.query = $("#rule-query").value.trim(); // else the service says why
  if ($("#rule-stream").value) rule.stream_ids = [$("#rule-stream").value];
  if ($("#rule-cooldown").value !== "") rule.cooldown_s = Number($("#rule-cooldown").value);
  await attempt("#rule-status", async () => {
    const created = await apiJson("/v1/alerts/rules", { method: "POST", json: rule });
    $("#rule-form").reset();
    say("#rule-status", `${created.name}: watching.`);
    await loadRules();
  });
}

const MAX_INCIDENTS = 50;

// One incident in the feed, in its place (newest first); one already shown is not repeated.
function showIncident(incident) {
  const list = $("#incident-list");
  if ([...list.children].some((item) => item.dataset.incidentId === incident.id)) return;
  const source = incident.stream_name || streamNames.get(incident.stream_id) || incident.stream_id;
  const raised = Date.parse(incident.created_at);
  const card = element(
    "li",
    {
      class: "incident",
      "data-incident-id": incident.id,
      "data-stream-id": incident.stream_id,
      "data-raised": raised,
    },
    thumbnail(incident.thumbnail_url),
    element(
      "div",
      { class: "meta" },
      element("span", { class: "score" }, incident.score.toFixed(3)),
      element("strong", {}, incident.rule_name),
      `${source} · ${shownTime(incident.start_time)}`,
    ),
  );
  const checked = incident.verification?.decision;
  if (checked) card.append(element("p", { class: "caption" }, `VLM check: ${checked}`));
  card.onclick = () => play({ ...incident, source });
  list.insertBefore(card, [...list.children].find((item) => Number(item.dataset.raised) < raised) ?? null);
  while (list.children.length > MAX_INCIDENTS) list.lastElementChild.remove();
  say("#incident-status", "");
}

// Incidents live: the SSE stream read through fetch (EventSource could not send the key), the latest
// listed once subscribed (so none raised meanwhile is missed), and again after a dropped connection.
async function followIncidents() {
  for (;;) {
    await attempt("#incident-status", async () => {
      const response = await api("/v1/alerts/incidents/stream");
      const { data } = await apiJson(`/v1/alerts/incidents?limit=${MAX_INCIDENTS}`);
      data.forEach(showIncident);
      if (!data.length) say("#incident-status", "No incidents yet: they appear here as rules fire.");
      for await (const incident of events(response)) showIncident(incident);
    });
    await wait(3000);
  }
}

// --- start ------------------------------------------------------------------------------------
async function start() {
  $("#search-form").addEventListener("submit", onSearch);
  $("#upload-form").addEventListener("submit", onUpload);
  $("#stream-form").addEventListener("submit", onAddStream);
  $("#forget-key").hidden = !apiKey;
  $("#forget-key").onclick = () => {
    sessionStorage.removeItem(KEY_STORE);
    location.reload();
  };
  const { data } = await apiJson("/v1/models");
  modelId = data[0]?.id ?? null;
  $("#model").textContent = modelId ?? "";
  await loadFiles();
  await loadStreams();
  pollStreams();
  if (service === "embed") {
    $("#rule-form").addEventListener("submit", onAddRule);
    await loadRules();
    followIncidents();
  }
  document.body.dataset.ready = "true";
}

start().catch((error) => say("#upload-status", error.message, true));
