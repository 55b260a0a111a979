// Data Factory console: plain JS, no build step. Live data from /v1/events (SSE); controls
// call the admin API with the bearer token typed in the header (kept in localStorage).
"use strict";
const $ = (s) => document.querySelector(s);
const series = new Map();          // "run/stream" or "run/sink:name" -> [eps...]
const HISTORY = 90;
const COLORS = ["#2a6fdb", "#2f8f4e", "#c2410c", "#7c3aed", "#b07d12", "#0e7490", "#be185d"];
let runs = [];

const tokenInput = $("#token");
tokenInput.value = localStorage.getItem("df-token") || new URLSearchParams(location.search).get("token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("df-token", tokenInput.value));

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (tokenInput.value) headers.Authorization = "Bearer " + tokenInput.value;
  const resp = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

function fmt(n) { return Math.round(n).toLocaleString("en-US"); }

function renderRuns() {
  const body = $("#runs tbody");
  body.innerHTML = "";
  for (const r of runs) {
    const tr = document.createElement("tr");
    tr.dataset.run = r.id;
    const eps = Object.values(r.streams || {}).reduce((a, s) => a + s.eps, 0);
    const sent = Object.values(r.sinks || {}).reduce((a, s) => a + s.sent, 0);
    const live = ["RUNNING", "PAUSED", "PROVISIONING"].includes(r.state);
    const stream = Object.keys(r.streams || {})[0] || "";
    tr.innerHTML = `<td><code>${r.id}</code></td><td>${r.name}</td>
      <td class="state state-${r.state}">${r.state}</td>
      <td class="num eps">${fmt(eps)}</td><td class="num">${fmt(sent)}</td>
      <td>${r.state === "RUNNING" ? '<button class="pause">Pause</button>' : ""}
          ${r.state === "PAUSED" ? '<button class="resume">Resume</button>' : ""}
          ${live ? '<button class="stop">Stop</button>' : ""}</td>
      <td>${live && stream ? `<input class="rate" type="number" min="0" step="100" placeholder="ev/s" aria-label="rate">
          <button class="set-rate" data-stream="${stream}">Set</button>` : ""}</td>`;
    body.appendChild(tr);
  }
}

$("#runs").addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button");
  if (!btn) return;
  const run = btn.closest("tr").dataset.run;
  try {
    if (btn.classList.contains("set-rate")) {
      const value = Number(btn.closest("tr").querySelector("input.rate").value);
      await api("PUT", `/v1/runs/${run}/streams/${btn.dataset.stream}/rate`,
                { profile: { profile: "constant", base: value } });
    } else {
      const verb = ["pause", "resume", "stop"].find((v) => btn.classList.contains(v));
      await api("POST", `/v1/runs/${run}/${verb}`);
    }
    await refresh();
  } catch (e) { showError(e.message); }
});

$("#start-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#start-msg").textContent = "";
  try {
    await api("POST", "/v1/runs", { config: $("#config-select").value });
    await refresh();
  } catch (e) { $("#start-msg").textContent = e.message; }
});

function showError(msg) {
  const li = document.createElement("li");
  li.textContent = new Date().toLocaleTimeString() + " " + msg;
  $("#errors").prepend(li);
}

function renderChaos() {
  const body = $("#chaos tbody");
  body.innerHTML = "";
  for (const r of runs) {
    for (const [k, n] of Object.entries(r.chaos || {})) {
      const tr = document.createElement("tr");
      tr.innerHTML = `<td><code>${r.id}</code></td><td>${k}</td><td class="num">${fmt(n)}</td>`;
      body.appendChild(tr);
    }
  }
}

// a sink is named when it is behind: holding a stream back (block), shedding (drop_newest),
// or lagging by more than a few seconds
function sinkStatus(k) {
  if (k.holding_back && k.holding_back.length) return ["holding back " + k.holding_back.join(", "), "bad"];
  const full = k.buffer && k.buffer.events >= 0.9 * k.buffer.max_events;
  const diskFull = k.disk && k.disk.bytes >= 0.9 * k.disk.max_bytes;
  if (full && k.buffer.when_full === "drop_newest" && (!k.disk || diskFull)) return [`shedding, lagging ${k.lag_seconds.toFixed(1)} s`, "bad"];
  if (k.disk && k.disk.events > 0) return [`on disk: ${fmt(k.disk.events)} events, oldest ${k.disk.oldest_seconds.toFixed(0)} s`, "warn"];
  if (k.lag_seconds > 5) return [`lagging ${k.lag_seconds.toFixed(1)} s`, "warn"];
  return ["ok", "ok"];
}

function renderSinks() {
  const body = $("#sinks tbody");
  body.innerHTML = "";
  for (const r of runs) {
    for (const [name, k] of Object.entries(r.sinks || {})) {
      const [status, cls] = sinkStatus(k);
      const fill = k.buffer ? Math.round((100 * k.buffer.events) / k.buffer.max_events) : 0;
      const tr = document.createElement("tr");
      tr.dataset.sink = name;
      tr.innerHTML = `<td><code>${r.id}</code></td><td>${name}</td>
        <td class="num">${fmt(k.eps)}</td><td class="num">${fmt(k.sent)}</td>
        <td class="num lag">${fmt(k.lag_events || 0)}</td>
        <td class="num">${(k.lag_seconds || 0).toFixed(1)}</td>
        <td class="num">${fill}%${k.disk ? ` + disk ${Math.round((100 * k.disk.bytes) / k.disk.max_bytes)}%` : ""} ${k.buffer ? k.buffer.when_full : ""}</td>
        <td class="num shed">${fmt(k.shed || 0)}</td>
        <td class="status status-${cls}">${status}</td>`;
      body.appendChild(tr);
    }
  }
}

function push(key, value) {
  const s = series.get(key) || [];
  s.push(value);
  if (s.length > HISTORY) s.shift();
  series.set(key, s);
}

function drawChart() {
  const c = $("#chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  let max = 10;
  for (const s of series.values()) max = Math.max(max, ...s);
  g.strokeStyle = "#e6e8ec"; g.fillStyle = "#596273"; g.font = "11px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = c.height - 20 - (i / 4) * (c.height - 30);
    g.beginPath(); g.moveTo(50, y); g.lineTo(c.width, y); g.stroke();
    g.fillText(fmt((max * i) / 4), 2, y + 4);
  }
  const legend = [];
  let i = 0;
  for (const [key, s] of series) {
    const color = COLORS[i++ % COLORS.length];
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    s.forEach((v, x) => {
      const px = 50 + (x / (HISTORY - 1)) * (c.width - 55);
      const py = c.height - 20 - (v / max) * (c.height - 30);
      x ? g.lineTo(px, py) : g.moveTo(px, py);
    });
    g.stroke();
    legend.push(`<span style="color:${color}">■ ${key} ${fmt(s[s.length - 1] || 0)}/s</span>`);
  }
  $("#legend").innerHTML = legend.join("");
  c.dataset.points = String([...series.values()].reduce((a, s) => a + s.filter((v) => v > 0).length, 0));
}

function onTick(ev) {
  runs = ev.runs;
  for (const r of runs) {
    for (const [name, s] of Object.entries(r.streams || {})) push(`${r.id}/${name}`, s.eps);
    for (const [name, s] of Object.entries(r.sinks || {})) push(`${r.id}/sink:${name}`, s.eps);
    for (const e of r.errors || []) if (!seenErrors.has(e.at)) { seenErrors.add(e.at); showError(e.error); }
  }
  renderRuns(); renderSinks(); renderChaos(); drawChart();
}
const seenErrors = new Set();

async function refresh() {
  const data = await api("GET", "/v1/runs");
  runs = data.runs.map((r) => ({ ...r, ...(runs.find((x) => x.id === r.id) || {}), state: r.state }));
  renderRuns();
}

async function init() {
  const names = await api("GET", "/v1/configs");
  $("#config-select").innerHTML = names.map((n) => `<option>${n}</option>`).join("");
  await refresh();
  const es = new EventSource("/v1/events");
  es.onopen = () => { $("#conn").textContent = "live"; $("#conn").classList.add("live"); };
  es.onerror = () => { $("#conn").textContent = "reconnecting…"; $("#conn").classList.remove("live"); };
  es.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.type === "tick") onTick(ev);
    else if (ev.type === "state") refresh();
  };
}
init().catch((e) => showError(e.message));
