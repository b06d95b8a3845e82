# ruff: noqa: E501 - CSS and JS text, one rule or statement a line
"""The dashboard's stylesheet and script, served from ``/static/``: no build step, no library.

The script keeps the overview live: it listens to ``/events`` (server-sent events), redraws the
throughput/latency chart and each queue's sparkline, and rebuilds the queue and worker tables
from each tick with ``textContent`` (never ``innerHTML``: names and counts stay text). The
Content-Security-Policy allows no inline script, so this file is the only code a page runs.
Imports: none.
"""

from __future__ import annotations

CSS = """
:root { --ink:#1d2430; --muted:#6b7484; --line:#e3e6eb; --bg:#f7f8fa; --ok:#2f9e44; --bad:#e03131;
  --lat:#1c7ed6; --warn:#fff4e0; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--ink); background:var(--bg); }
header { display:flex; align-items:center; gap:18px; padding:8px 20px; background:#1d2430; color:#fff; flex-wrap:wrap; }
header a { color:#cfd6e1; text-decoration:none; }
header .brand { font-weight:700; font-size:18px; color:#8ce99a; }
header nav a { margin-right:14px; } header nav a.current { color:#fff; border-bottom:2px solid #8ce99a; }
header .search { display:flex; gap:4px; } header .search input { width:260px; }
header .broker { margin-left:auto; color:#9aa5b5; font-family:ui-monospace, monospace; font-size:12px; }
.badge { background:#f08c00; color:#fff; border-radius:3px; padding:1px 6px; font-size:12px; }
main { padding:12px 20px 40px; }
h1 { font-size:20px; margin:6px 0 12px; } h2 { font-size:16px; margin:22px 0 8px; } h2 small { color:var(--muted); font-weight:400; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef1f5; font-weight:600; white-space:nowrap; }
td { font-variant-numeric: tabular-nums; overflow-wrap:anywhere; }
table.dead td:nth-child(2), table.timeline td:first-child, table.delayed td:first-child { white-space:nowrap; }
tr.backlog td { background:var(--warn); } tr.backlog td:first-child { border-left:3px solid #f08c00; }
pre { background:#fff; border:1px solid var(--line); padding:8px; overflow:auto; max-height:480px; white-space:pre-wrap; word-break:break-word; }
pre.traceback { border-left:3px solid var(--bad); }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; background:#fff; border:1px solid var(--line); padding:10px; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; }
.state { font-weight:700; padding:1px 6px; border-radius:3px; background:#e9ecef; }
.state-success { background:#d3f9d8; } .state-failure, .state-dead-lettered { background:#ffe3e3; }
.state-retry, .state-running, .state-started { background:#fff3bf; }
button, .button { font:inherit; padding:3px 10px; border:1px solid #adb5bd; border-radius:3px; background:#fff; cursor:pointer; color:var(--ink); text-decoration:none; }
button.danger { border-color:var(--bad); color:var(--bad); } button.primary { border-color:var(--lat); color:var(--lat); }
button.small { padding:0 6px; font-size:12px; }
form.inline { display:inline; } .actions { margin:10px 0; display:flex; gap:8px; flex-wrap:wrap; }
.notice { background:#e7f5ff; border:1px solid #a5d8ff; padding:6px 10px; }
.note { background:var(--warn); border:1px solid #ffd8a8; padding:6px 10px; }
.error { color:var(--bad); font-weight:600; } .muted { color:var(--muted); }
.confirm { background:#fff; border:1px solid var(--bad); padding:14px; max-width:760px; }
.confirm .question { font-size:16px; font-weight:600; }
.chart { background:#fff; border:1px solid var(--line); padding:8px 12px; }
.chart-head { display:flex; gap:16px; align-items:center; flex-wrap:wrap; } .chart-head h2 { margin:0; }
#chart { width:100%; height:220px; display:block; }
.legend i { display:inline-block; width:10px; height:10px; margin:0 4px 0 10px; }
.legend i.done { background:var(--ok); } .legend i.failed { background:var(--bad); } .legend i.lat { background:var(--lat); }
.live { margin-left:auto; color:var(--muted); font-size:12px; }
canvas.spark { display:block; }
nav.tabs a { display:inline-block; margin:0 6px 6px 0; padding:2px 8px; border:1px solid var(--line); background:#fff; text-decoration:none; color:var(--ink); }
nav.tabs a.current { border-color:var(--lat); }
form.filter { margin:8px 0; display:flex; gap:10px; align-items:center; flex-wrap:wrap; }
.pager a, .pager span { margin-right:10px; } .pager span { color:var(--muted); }
"""

JS = r"""
"use strict";
(function () {
  var prefix = document.body.dataset.prefix || "";
  var history = [];          // ticks: {t, q: {queue: [done, failed, p95 ms]}}
  var lastCounts = null;

  function fmt(n) { return (n === null || n === undefined) ? "-" : Number(n).toLocaleString("en-US"); }
  function age(s) {
    if (s === null || s === undefined) return "-";
    if (s < 120) return s.toFixed(1) + "s";
    if (s < 7200) return Math.round(s / 60) + "m";
    return (s / 3600).toFixed(1) + "h";
  }
  function when(s) { return s ? new Date(s * 1000).toISOString().slice(0, 19).replace("T", " ") : "-"; }
  function path(p) { return prefix + p.split("/").map(encodeURIComponent).join("/"); }
  function cell(row, value, href) {
    var td = document.createElement("td");
    if (value instanceof Node) { td.appendChild(value); }
    else if (href) { var a = document.createElement("a"); a.href = href; a.textContent = value; td.appendChild(a); }
    else { td.textContent = value; }
    row.appendChild(td);
  }
  function series(queue) {
    return history.map(function (tick) {
      if (queue) { return tick.q[queue] || [0, 0, null]; }
      var done = 0, failed = 0, lat = null;
      Object.keys(tick.q).forEach(function (k) {
        var v = tick.q[k]; done += v[0]; failed += v[1];
        if (v[2] !== null && (lat === null || v[2] > lat)) lat = v[2];
      });
      return [done, failed, lat];
    });
  }
  function rate(queue) {
    var recent = history.slice(-10);
    if (!recent.length) return "-";
    var sum = 0; recent.forEach(function (t) { sum += (t.q[queue] || [0])[0]; });
    return (sum / recent.length).toFixed(1);
  }

  function label(v) { return v >= 10 ? String(Math.round(v)) : v.toFixed(1); }

  function drawChart() {
    var canvas = document.getElementById("chart");
    if (!canvas) return;
    var select = document.getElementById("chart-queue");
    var data = series(select ? select.value : "");
    var w = canvas.width = canvas.clientWidth || 1100, h = canvas.height = 220;
    var g = canvas.getContext("2d"), left = 44, right = 54, top = 10, bottom = 22;
    var n = 120, bw = (w - left - right) / n;
    var maxDone = 1, maxLat = 1;
    data.forEach(function (d) { maxDone = Math.max(maxDone, d[0]); if (d[2] !== null) maxLat = Math.max(maxLat, d[2]); });
    g.clearRect(0, 0, w, h);
    g.fillStyle = "#6b7484"; g.font = "11px system-ui"; g.strokeStyle = "#e3e6eb";
    for (var i = 0; i <= 4; i++) {
      var y = top + (h - top - bottom) * i / 4;
      g.beginPath(); g.moveTo(left, y); g.lineTo(w - right, y); g.stroke();
      g.fillText(label(maxDone * (4 - i) / 4) + "/s", 2, y + 4);
      g.fillText(label(maxLat * (4 - i) / 4) + " ms", w - right + 4, y + 4);
    }
    g.fillText("-120 s", left, h - 6); g.fillText("now", w - right - 22, h - 6);
    var offset = n - data.length, span = h - top - bottom;
    data.forEach(function (d, k) {
      var x = left + (offset + k) * bw, okH = span * (d[0] - d[1]) / maxDone, badH = span * d[1] / maxDone;
      g.fillStyle = "#2f9e44"; g.fillRect(x, h - bottom - okH, Math.max(1, bw - 1), okH);
      g.fillStyle = "#e03131"; g.fillRect(x, h - bottom - okH - badH, Math.max(1, bw - 1), badH);
    });
    g.strokeStyle = "#1c7ed6"; g.lineWidth = 2; g.beginPath();
    var started = false;
    data.forEach(function (d, k) {
      if (d[2] === null) { started = false; return; }
      var x = left + (offset + k + 0.5) * bw, y = h - bottom - span * d[2] / maxLat;
      if (started) { g.lineTo(x, y); } else { g.moveTo(x, y); started = true; }
    });
    g.stroke();
    var total = 0; data.forEach(function (d) { total += d[0]; });
    canvas.dataset.ticks = String(history.length);
    canvas.dataset.done = String(total);
  }

  function drawSpark(canvas) {
    var data = series(canvas.dataset.queue), g = canvas.getContext("2d");
    var w = canvas.width, h = canvas.height, max = 1;
    data.forEach(function (d) { max = Math.max(max, d[0]); });
    g.clearRect(0, 0, w, h); g.strokeStyle = "#2f9e44"; g.beginPath();
    data.forEach(function (d, k) {
      var x = w - (data.length - k) * (w / 120), y = h - 1 - (h - 2) * d[0] / max;
      if (k) { g.lineTo(x, y); } else { g.moveTo(x, y); }
    });
    g.stroke();
  }

  function queueRows(queues) {
    var body = document.getElementById("queues");
    if (!body) return;
    var rows = document.createDocumentFragment();
    queues.forEach(function (q) {
      var tr = document.createElement("tr");
      tr.dataset.queue = q.name;
      if ((q.oldest_age_s !== null && q.oldest_age_s >= 10) || (q.waiting && !q.consumers)) tr.className = "backlog";
      cell(tr, q.name, path("/queues/" + q.name));
      [q.waiting, q.reserved, q.running, q.delayed].forEach(function (v) { cell(tr, fmt(v)); });
      cell(tr, fmt(q.dead), q.dead ? prefix + "/dead?queue=" + encodeURIComponent(q.name) : null);
      cell(tr, age(q.oldest_age_s)); cell(tr, String(q.consumers)); cell(tr, rate(q.name));
      var spark = document.createElement("canvas");
      spark.className = "spark"; spark.width = 120; spark.height = 22; spark.dataset.queue = q.name;
      cell(tr, spark);
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
  }

  function workerRows(workers) {
    var body = document.getElementById("workers");
    if (!body) return;
    var rows = document.createDocumentFragment();
    workers.forEach(function (w) {
      var tr = document.createElement("tr");
      [w.name, w.host, w.pool, w.concurrency, w.in_flight, w.rate === null ? "-" : w.rate.toFixed(1),
       fmt(w.processed), fmt(w.failed), w.rss_kib === null ? "-" : Math.round(w.rss_kib / 1024) + " MiB",
       when(w.started_at), age(w.heartbeat_age_s)].forEach(function (v) { cell(tr, v === null || v === undefined ? "-" : String(v)); });
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
  }

  function redraw() {
    drawChart();
    document.querySelectorAll("canvas.spark").forEach(drawSpark);
  }

  function applyCounts(tick) {
    var state = document.getElementById("live-state");
    if (tick.error) { if (state) state.textContent = "broker: " + tick.error; return; }
    if (!tick.queues) return;
    lastCounts = tick;
    queueRows(tick.queues); workerRows(tick.workers);
    var note = document.getElementById("events-note");
    var seen = history.some(function (t) { return Object.keys(t.q).length > 0; });
    if (note && seen && !(tick.events_off || []).length) note.remove();
    if (state) state.textContent = "live · " + when(tick.t).slice(11) + " UTC";
  }

  function onTick(tick) {
    history.push({t: tick.t, q: tick.q});
    if (history.length > 120) history.shift();
    applyCounts(tick);
    redraw();
  }

  function live() {
    if (!document.getElementById("chart") || !window.EventSource) return;
    var source = new EventSource(prefix + "/events");
    source.addEventListener("hello", function (e) {
      var start = JSON.parse(e.data);
      history = start.history.map(function (t) { return {t: t.t, q: t.q}; });
      if (start.tick) applyCounts(start.tick);
      redraw();
    });
    source.addEventListener("tick", function (e) { onTick(JSON.parse(e.data)); });
    source.onerror = function () {
      var state = document.getElementById("live-state");
      if (state) state.textContent = "reconnecting…";
    };
    var select = document.getElementById("chart-queue");
    if (select) select.addEventListener("change", drawChart);
    window.addEventListener("resize", drawChart);
  }

  function selectAll() {
    var form = document.getElementById("dead-form");
    if (!form) return;
    var head = form.querySelector("thead th");
    var box = document.createElement("input");
    box.type = "checkbox"; box.id = "select-all"; box.setAttribute("aria-label", "select all on this page");
    box.addEventListener("change", function () {
      form.querySelectorAll("input[name=ids]").forEach(function (c) { c.checked = box.checked; });
    });
    if (head) head.appendChild(box);
  }

  live();
  selectAll();
  window.greenqDashboard = {history: function () { return history; }, counts: function () { return lastCounts; }};
})();
"""

ASSETS = {"dashboard.css": CSS.encode(), "dashboard.js": JS.encode()}
