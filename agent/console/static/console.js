// qxedge console: the plant at a glance, live (Server-Sent Events on /events), plots drawn as SVG here.
// Everything comes from this agent's ops endpoint; nothing is loaded from elsewhere.
"use strict";

const state = { doc: null, asset: null, series: [], thresholds: {}, lockAsset: null, lockTo: true };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node[k] = v;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toPrecision(4).replace(/\.?0+$/, ""));
const when = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "–");
const ago = (ts) => (ts ? `${Math.max(0, Math.round(Date.now() / 1000 - ts))} s ago` : "");
const path = (asset) => asset.split("/").map(encodeURIComponent).join("/");

function flash(text, error) {
  const box = $("flash");
  box.textContent = text;
  box.className = error ? "error" : "";
  box.hidden = false;
}

function scoreBar(score, threshold) {
  if (score === undefined) return el("span", { class: "muted" }, "no score yet");
  const top = Math.max(threshold || 1, score) * 1.25;
  const bar = el("div", { class: "bar" + (threshold !== undefined && score > threshold ? " alarm" : "") });
  bar.append(el("span", { style: `width:${(100 * score) / top}%` }));
  if (threshold !== undefined) {
    const mark = el("i", { title: `threshold ${threshold}` });
    mark.style.left = `${(100 * threshold) / top}%`;
    bar.append(mark);
  }
  bar.querySelector("span").style.width = `${Math.min(100, (100 * score) / top)}%`;
  return bar;
}

function setpointText(sp) {
  if (!sp) return el("span", { class: "muted" }, "none on record");
  return el("span", {}, el("b", {}, fmt(sp.value)), ` since ${when(sp.ts)} `, el("span", { class: "muted" }, `(${sp.source})`));
}

function lockButton(asset, lock) {
  return el("button", {
    type: "button", class: "lock", "data-asset": asset,
    onclick: () => openLock(asset, !lock),
  }, lock ? "Unlock" : "Lock");
}

function renderPlant(doc) {
  const list = $("connectors");
  list.replaceChildren(...doc.connectors.map((c) =>
    el("li", {}, el("span", { class: c.health }, "● "), `${c.name} `, el("span", { class: "muted" }, `${c.health}${c.detail ? ", " + c.detail : ""}`))));
  $("outbox").replaceChildren(`${doc.outbox.broker_unacked} unacknowledged, ${doc.outbox.stored} stored`,
    doc.outbox.alarm ? el("b", { class: "down" }, " ALARM") : "");
  $("dc-summary").textContent = dcSummary(doc.offload);
  $("updated").textContent = new Date(doc.ts * 1000).toLocaleTimeString();
  $("version").textContent = `qxedge ${doc.version}, ${doc.counts.readings} readings, ${doc.counts.evaluations} evaluations`;
  const rows = doc.assets.map((a) => {
    const models = Object.keys(a.scores);
    const scores = models.length
      ? models.map((m) => el("div", {}, scoreBar(a.scores[m], a.thresholds[m]), el("span", { class: "score" }, `${fmt(a.scores[m])}${a.thresholds[m] !== undefined ? " / " + fmt(a.thresholds[m]) : ""}`)))
      : [el("span", { class: "muted" }, "not scored")];
    const readings = Object.entries(a.readings).sort().map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    return el("tr", { class: a.alarm ? "alarm" : "", "data-asset": a.asset },
      el("td", {}, el("a", { href: `#/asset/${a.asset}` }, a.asset)),
      el("td", { class: "score-cell" }, ...scores),
      el("td", { class: "readings" }, readings || "–"),
      el("td", { class: "setpoint" }, setpointText(a.setpoint)),
      el("td", { class: "lock-state" }, a.lock ? el("span", { class: "locked" }, `locked by ${a.lock.by}`) : "–"),
      el("td", {}, doc.console && doc.console.locks ? lockButton(a.asset, a.lock) : el("span", { class: "muted" }, "read-only")));
  });
  document.querySelector("#assets tbody").replaceChildren(...rows);
}

function dcSummary(o) {
  if (!o.configured) return "not configured";
  const jobs = o.jobs || 0;
  return `${o.answered || 0} of ${jobs} jobs answered, ${o.fallbacks || 0} local fallbacks`;
}

function renderDatacenter(doc) {
  const o = doc.offload;
  $("dc-counts").textContent = dcSummary(o) + (o.configured ? `, ${o.late || 0} late, ${o.invalid_results || 0} invalid` : "");
  document.querySelector("#jobs tbody").replaceChildren(...(o.recent || []).map((j) =>
    el("tr", { class: j.source === "fallback" ? "alarm" : "" }, el("td", {}, j.job_id.slice(0, 8)), el("td", {}, j.first),
      el("td", {}, j.source), el("td", {}, j.solver), el("td", {}, fmt(j.seconds)), el("td", {}, j.variables), el("td", {}, j.feasible ? "yes" : "no"))));
}

async function loadDecisions() {
  const answer = await fetch("/api/audit?kind=decision&limit=50");
  if (!answer.ok) return;
  const doc = await answer.json();
  document.querySelector("#decisions tbody").replaceChildren(...doc.rows.reverse().map((r) =>
    el("tr", {}, el("td", {}, when(r.ts)), el("td", {}, r.verdict), el("td", {}, r.provenance.solver || ""),
      el("td", {}, fmt(r.provenance.energy)), el("td", {}, String(r.provenance.job_id || "").slice(0, 8)), el("td", {}, r.provenance.reason || ""))));
}

function renderAsset(doc) {
  const a = doc.assets.find((x) => x.asset === state.asset);
  if (!a) return;
  $("asset-setpoint").replaceChildren(setpointText(a.setpoint));
  $("asset-provenance").textContent = a.setpoint ? JSON.stringify(a.setpoint.provenance) : "";
  $("asset-lock").replaceChildren(a.lock ? el("span", { class: "locked" }, `locked by ${a.lock.by}`) : "not locked");
  const button = $("asset-lock-button");
  button.hidden = !(doc.console && doc.console.locks);
  button.textContent = a.lock ? "Unlock" : "Lock";
  button.onclick = () => openLock(a.asset, !a.lock);
  const last = state.series.length ? state.series[state.series.length - 1][0] : 0;
  if (a.ts && a.ts > last) {
    const metrics = { ...a.readings };
    for (const [m, s] of Object.entries(a.scores)) metrics[`score/${m}`] = s;
    if (a.setpoint) metrics.setpoint = a.setpoint.value;
    state.series.push([a.ts, metrics]);
    const horizon = a.ts - (state.historyS || 120);
    while (state.series.length && state.series[0][0] < horizon) state.series.shift();
  }
  drawCharts();
}

function drawCharts() {
  const keys = new Set();
  for (const [, m] of state.series) Object.keys(m).forEach((k) => keys.add(k));
  const ordered = [...keys].sort((x, y) => (y.startsWith("score/") - x.startsWith("score/")) || x.localeCompare(y));
  $("charts").replaceChildren(...ordered.map((k) => chart(k, state.series, k.startsWith("score/") ? state.thresholds[k.slice(6)] : undefined)));
}

function chart(key, series, threshold) {
  const ns = "http://www.w3.org/2000/svg";
  const points = series.filter(([, m]) => m[key] !== undefined).map(([t, m]) => [t, m[key]]);
  const box = el("div", { class: "chart", "data-key": key }, el("h3", {}, key, points.length ? el("span", { class: "muted" }, `  ${fmt(points[points.length - 1][1])}`) : ""));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 400 140");
  svg.setAttribute("preserveAspectRatio", "none");
  if (points.length) {
    const t0 = points[0][0], t1 = Math.max(points[points.length - 1][0], t0 + 1);
    const values = points.map((p) => p[1]).concat(threshold !== undefined ? [threshold] : []);
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const x = (t) => 30 + (360 * (t - t0)) / (t1 - t0);
    const y = (v) => 125 - (115 * (v - lo)) / (hi - lo);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
    svg.append(line);
    if (threshold !== undefined) {
      const mark = document.createElementNS(ns, "line");
      mark.setAttribute("class", "threshold");
      mark.setAttribute("x1", 30); mark.setAttribute("x2", 390);
      mark.setAttribute("y1", y(threshold)); mark.setAttribute("y2", y(threshold));
      svg.append(mark);
    }
    for (const [v, yy] of [[hi, 12], [lo, 128]]) {
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", 0); label.setAttribute("y", yy);
      label.textContent = fmt(v);
      svg.append(label);
    }
    const span = document.createElementNS(ns, "text");
    span.setAttribute("x", 300); span.setAttribute("y", 138);
    span.textContent = `last ${Math.round(t1 - t0)} s`;
    svg.append(span);
  }
  box.append(svg);
  return box;
}

async function enterAsset(asset) {
  state.asset = asset;
  state.series = [];
  $("asset-name").textContent = asset;
  const answer = await fetch(`/api/assets/${path(asset)}`);
  if (answer.ok) {
    const doc = await answer.json();
    state.series = doc.points;
    state.thresholds = doc.thresholds;
    state.historyS = doc.history_s;
  }
  if (state.doc) renderAsset(state.doc);
}

async function searchAudit(event) {
  if (event) event.preventDefault();
  const form = new FormData($("audit-form"));
  const query = new URLSearchParams({ limit: "200" });
  for (const [k, v] of form.entries()) if (v) query.set(k, v);
  const answer = await fetch(`/api/audit?${query}`);
  if (!answer.ok) { flash(`audit: ${answer.status} ${await answer.text()}`, true); return; }
  const doc = await answer.json();
  $("audit-path").textContent = `${doc.rows.length} row(s), newest first, from ${doc.path}`;
  document.querySelector("#audit tbody").replaceChildren(...doc.rows.reverse().map((r) =>
    el("tr", { class: r.verdict === "refused" || r.verdict === "alarm" ? "alarm" : "" },
      el("td", {}, new Date(r.ts * 1000).toLocaleString()), el("td", {}, r.kind), el("td", {}, r.asset || ""),
      el("td", {}, r.verdict + (r.count > 1 ? ` ×${r.count}` : "")), el("td", {}, r.value === null ? "" : fmt(r.value)),
      el("td", {}, r.source || ""), el("td", {}, r.reason || ""))));
}

function openLock(asset, lock) {
  state.lockAsset = asset;
  state.lockTo = lock;
  $("lock-title").textContent = `${lock ? "Lock" : "Unlock"} ${asset}`;
  $("lock-token").value = sessionStorage.getItem("qxedge-token") || "";
  $("lock-by").value = sessionStorage.getItem("qxedge-by") || "";
  $("lock-dialog").showModal();
}

async function confirmLock(event) {
  event.preventDefault();
  const token = $("lock-token").value.trim();
  const by = $("lock-by").value.trim();
  $("lock-dialog").close();
  if (token) sessionStorage.setItem("qxedge-token", token);
  if (by) sessionStorage.setItem("qxedge-by", by);
  const answer = await fetch(`/api/locks/${path(state.lockAsset)}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ locked: state.lockTo, by, reason: $("lock-reason").value }),
  });
  const text = await answer.text();
  if (answer.ok) flash(`${state.lockAsset} ${state.lockTo ? "locked" : "unlocked"}`, false);
  else {
    if (answer.status === 401) sessionStorage.removeItem("qxedge-token");
    flash(`refused (${answer.status}): ${text.trim()}`, true);
  }
}

function route() {
  const hash = location.hash || "#/";
  const view = hash.startsWith("#/asset/") ? "asset" : hash === "#/audit" ? "audit" : hash === "#/datacenter" ? "datacenter" : "plant";
  for (const name of ["plant", "asset", "audit", "datacenter"]) $(`view-${name}`).hidden = name !== view;
  $("nav-plant").className = view === "plant" || view === "asset" ? "active" : "";
  $("nav-audit").className = view === "audit" ? "active" : "";
  $("nav-dc").className = view === "datacenter" ? "active" : "";
  if (view === "asset") enterAsset(decodeURIComponent(hash.slice("#/asset/".length)));
  else state.asset = null;
  if (view === "audit") searchAudit();
  if (view === "datacenter") loadDecisions();
  if (state.doc) render(state.doc);
}

function render(doc) {
  state.doc = doc;
  $("site").textContent = doc.site;
  const link = $("link");
  link.textContent = doc.ready ? "live" : `not ready: ${doc.not_ready}`;
  link.className = `pill ${doc.ready ? "up" : "down"}`;
  if (!$("view-plant").hidden) renderPlant(doc);
  if (!$("view-asset").hidden) renderAsset(doc);
  if (!$("view-datacenter").hidden) renderDatacenter(doc);
}

function connect() {
  const events = new EventSource("/events");
  events.addEventListener("status", (e) => render(JSON.parse(e.data)));
  events.onerror = () => {
    const link = $("link");
    link.textContent = "disconnected: retrying";
    link.className = "pill down";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", route);
  $("audit-form").addEventListener("submit", searchAudit);
  $("lock-confirm").addEventListener("click", confirmLock);
  $("lock-cancel").addEventListener("click", () => $("lock-dialog").close());
  route();
  fetch("/status").then((r) => r.json()).then(render).catch(() => {});
  connect();
});
