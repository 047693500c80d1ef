// mcepl dashboard: folds the server-sent events of one or more runs into the graph (cytoscape.js),
// the charts (uPlot) and the node table. Read-only: nothing on this page changes the run.
"use strict";

const $ = (sel) => document.querySelector(sel);
const GREY = "rgba(110,110,110,0.35)", MEAN = "#2166ac", HILITE = "#e6550d";
const RUN_COLOURS = ["#2166ac", "#d6604d", "#1b7837", "#762a83", "#e08214", "#35978f", "#878787"];

const dash = {
  runs: [],         // per run: info and what the records say so far
  current: 0,       // the run shown in the graph, the per-round chart and the table
  cy: null, accPlot: null, bytesPlot: null,
  hover: null,      // node id under the mouse
  sort: { key: "node", dir: 1 },
  dirty: false, ended: false, updates: 0,
};
window.mceplDashboard = dash;  // for tests and curious users (read-only use)

// ------------------------------------------------------------------ formatting
function fmtBytes(n) {
  if (n == null) return "-";
  for (const [u, s] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
    if (Math.abs(n) >= s) return (n / s).toFixed(2) + " " + u;
  }
  return n.toFixed(0) + " B";
}
const fmtAcc = (a) => (a == null ? "-" : a.toFixed(4));
const fmtS = (s) => (s == null ? "-" : s.toFixed(2));
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

// ------------------------------------------------------------------ folding records
function newRun(info) {
  const nodes = new Map();
  for (const n of info.nodes) {
    nodes.set(n.id, {
      id: n.id, r: n.r, labels: n.labels, degree: n.degree, round: -1, acc: null, accRound: null,
      density: null, loss: null, accByRound: new Map(), links: new Map(),
      sent: { data: 0, control: 0, metrics: 0, status: 0 }, recv: { data: 0, control: 0 },
      dropped: 0, droppedBy: "", compute: 0, comm: 0, state: "starting", detail: "",
    });
  }
  return {
    info, nodes, records: 0, accSum: new Map(), bytesByRound: new Map(), totalData: 0,
    malformed: 0, malformedNote: "", status: "running",
  };
}

function addRecord(run, r) {
  run.records += 1;
  let n = run.nodes.get(r.node);
  if (!n) return;  // a node the topology does not list
  n.round = Math.max(n.round, r.round);
  if (r.test_acc != null) {
    n.accByRound.set(r.round, r.test_acc);
    if (n.accRound == null || r.round >= n.accRound) { n.acc = r.test_acc; n.accRound = r.round; }
    const s = run.accSum.get(r.round) || [0, 0];
    run.accSum.set(r.round, [s[0] + r.test_acc, s[1] + 1]);
  }
  if (r.density != null) n.density = r.density;
  if (r.train_loss != null) n.loss = r.train_loss;
  n.sent.data += r.data_sent || 0;
  n.sent.control += r.control_sent || 0;
  n.sent.metrics += r.metrics_sent || 0;
  n.sent.status += r.status_sent || 0;
  n.recv.data += r.data_received || 0;
  n.recv.control += r.control_received || 0;
  if (r.dropped != null) n.dropped = Math.max(n.dropped, r.dropped);  // cumulative in records
  if (r.dropped_by) n.droppedBy = r.dropped_by;
  n.compute += r.compute_s || 0;
  n.comm += r.comm_s || 0;
  for (const [peer, b] of Object.entries(r.links || {})) {
    n.links.set(+peer, (n.links.get(+peer) || 0) + b);
  }
  run.bytesByRound.set(r.round, (run.bytesByRound.get(r.round) || 0) + (r.data_sent || 0));
  run.totalData += r.data_sent || 0;
}

function applyUpdate(msg) {
  for (const [key, part] of Object.entries(msg.runs)) {
    const run = dash.runs[+key];
    if (!run) continue;
    for (const r of part.records || []) addRecord(run, r);
    for (const [id, st] of Object.entries(part.states || {})) {
      const n = run.nodes.get(+id);
      if (n) { n.state = st.state; n.detail = st.detail; }
    }
    if (part.status != null) {
      run.status = part.status; run.malformed = part.malformed; run.malformedNote = part.malformed_note;
    }
  }
  dash.updates += 1;
  schedule();
}

// derived series ------------------------------------------------------------------
function meanCurve(run) {
  return [...run.accSum.entries()].sort((a, b) => a[0] - b[0]).map(([k, [s, c]]) => [k, s / c]);
}
function cumulativeBytes(run) {
  const out = new Map(); let total = 0;
  for (const k of [...run.bytesByRound.keys()].sort((a, b) => a - b)) {
    total += run.bytesByRound.get(k); out.set(k, total);
  }
  return out;
}
function minRound(run) {
  let m = Infinity;
  for (const n of run.nodes.values()) m = Math.min(m, n.round);
  return m === Infinity ? -1 : m;
}

// ------------------------------------------------------------------ graph
function buildGraph() {
  const run = dash.runs[dash.current];
  const els = [];
  for (const n of run.info.nodes) els.push({ data: { id: "n" + n.id, node: n.id, label: String(n.id), r: n.r, acc: -1, state: "starting" } });
  for (const [a, b] of run.info.edges) els.push({ data: { id: `e${a}-${b}`, source: "n" + a, target: "n" + b, w: 0, bytes: 0 } });
  if (dash.cy) dash.cy.destroy();
  dash.cy = cytoscape({
    container: $("#graph"), elements: els, minZoom: 0.2, maxZoom: 4,
    boxSelectionEnabled: false, autoungrabify: false,
    style: [
      { selector: "node", style: {
        "background-color": "mapData(acc, 0, 1, #d7301f, #1a9850)",
        width: "mapData(r, 0, 1, 22, 64)", height: "mapData(r, 0, 1, 22, 64)",
        label: "data(label)", "text-valign": "center", "text-halign": "center", color: "#fff",
        "font-size": 12, "font-weight": "bold", "text-outline-width": 1.5, "text-outline-color": "#333",
        "border-width": 1, "border-color": "#555" } },
      { selector: "node[acc < 0]", style: { "background-color": "#bdbdbd" } },
      { selector: "node[state = 'waiting']", style: { "border-width": 4, "border-color": "#fd8d3c" } },
      { selector: "node[state = 'failed']", style: { "border-width": 5, "border-color": "#67001f", shape: "octagon" } },
      { selector: "node[state = 'stopped']", style: { "border-style": "dashed", "border-width": 3 } },
      { selector: "node.hl", style: { "overlay-color": HILITE, "overlay-opacity": 0.25, "overlay-padding": 5 } },
      { selector: "edge", style: {
        width: "mapData(w, 0, 1, 0.5, 7)", "line-color": "mapData(w, 0, 1, #c6dbef, #08306b)",
        "curve-style": "straight", opacity: 0.6 } },
    ],
    // cytoscape's force-directed layout for sparse graphs; dense ones (the ER(0.5) default) are
    // unreadable that way, so their nodes go on a circle
    layout: run.info.edges.length > 2 * run.info.nodes.length
      ? { name: "circle", animate: false, padding: 25, sort: (a, b) => a.data("node") - b.data("node") }
      : { name: "cose", animate: false, randomize: true, nodeRepulsion: () => 12000, idealEdgeLength: () => 80, padding: 25 },
  });
  dash.cy.on("mouseover", "node", (ev) => setHover(ev.target.data("node"), ev.renderedPosition || ev.target.renderedPosition()));
  dash.cy.on("mouseout", "node", () => setHover(null));
  dash.cy.on("tap", "node", (ev) => setHover(ev.target.data("node"), ev.target.renderedPosition()));
}

function updateGraph(run) {
  const cy = dash.cy;
  let maxLink = 0;
  const link = new Map();
  for (const [a, b] of run.info.edges) {
    const bytes = (run.nodes.get(a)?.links.get(b) || 0) + (run.nodes.get(b)?.links.get(a) || 0);
    link.set(`e${a}-${b}`, bytes); maxLink = Math.max(maxLink, bytes);
  }
  cy.batch(() => {
    for (const n of run.nodes.values()) {
      const el = cy.getElementById("n" + n.id);
      if (el.empty()) continue;
      el.data({ acc: n.acc == null ? -1 : n.acc, state: n.state });
    }
    for (const [id, bytes] of link) {
      cy.getElementById(id).data({ w: maxLink > 0 ? bytes / maxLink : 0, bytes });
    }
  });
}

function setHover(id, pos) {
  dash.hover = id;
  const tip = $("#tooltip");
  if (dash.cy) {
    dash.cy.nodes().removeClass("hl");
    if (id != null) dash.cy.getElementById("n" + id).addClass("hl");
  }
  if (id == null) { tip.hidden = true; }
  else {
    const n = dash.runs[dash.current].nodes.get(id);
    tip.innerHTML = tooltipHtml(n);
    tip.hidden = false;
    const g = $("#graph");
    // beside the node, on the side of the graph with more room
    const left = pos.x > g.clientWidth / 2 ? pos.x - tip.offsetWidth - 16 : pos.x + 16;
    tip.style.left = Math.max(0, g.offsetLeft + left) + "px";
    tip.style.top = Math.max(0, g.offsetTop + Math.min(pos.y - 20, g.clientHeight - tip.offsetHeight)) + "px";
  }
  if (dash.accPlot) dash.accPlot.redraw(false, false);
  for (const tr of document.querySelectorAll("#nodes tbody tr")) tr.classList.toggle("hl", +tr.dataset.node === id);
}

function tooltipHtml(n) {
  const run = dash.runs[dash.current];
  const labels = n.labels ? n.labels.join(", ") : run.info.label_note;
  const err = n.state === "failed" ? n.detail : "";
  return `<b>node ${n.id}</b> (${n.degree} neighbour${n.degree === 1 ? "" : "s"})<br>` +
    `labels: ${esc(labels)}<br>r = ${n.r}, density ${n.density == null ? "-" : n.density.toFixed(4)}<br>` +
    `accuracy ${fmtAcc(n.acc)}${n.accRound != null ? " (round " + n.accRound + ")" : ""}<br>` +
    `bytes sent ${fmtBytes(n.sent.data + n.sent.control + n.sent.metrics)}, received ${fmtBytes(n.recv.data + n.recv.control)}<br>` +
    `state: ${esc(n.state)}${n.detail && n.state !== "failed" ? " " + esc(n.detail) : ""}<br>` +
    `last error: ${err ? esc(err) : "none"}`;
}

// ------------------------------------------------------------------ charts
function chartWidth(el) { return Math.max(320, el.clientWidth - 4); }

function buildAccPlot() {
  const run = dash.runs[dash.current];
  const el = $("#acc-chart");
  el.innerHTML = "";
  const ids = run.info.nodes.map((n) => n.id);
  const series = [{ label: "round" },
    { label: "mean", stroke: MEAN, width: 2.5, points: { show: true, size: 5 } }];
  for (const id of ids) {
    series.push({ label: "node " + id, width: 1, points: { show: false },
      stroke: () => (dash.hover === id ? HILITE : GREY), spanGaps: true });
  }
  dash.accIds = ids;
  dash.accPlot = new uPlot({
    width: chartWidth(el), height: 230, legend: { show: false }, cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false }, y: { range: [0, 1] } },
    axes: [{ label: "round (iteration)", incrs: [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000] },
      { label: "test accuracy" }], series,
  }, accData(run), el);
}

function accData(run) {
  const rounds = [...run.accSum.keys()].sort((a, b) => a - b);
  const mean = new Map(meanCurve(run));
  const data = [rounds, rounds.map((k) => mean.get(k))];
  for (const id of dash.accIds || []) {
    const m = run.nodes.get(id).accByRound;
    data.push(rounds.map((k) => (m.has(k) ? m.get(k) : null)));
  }
  return data;
}

function buildBytesPlot() {
  const el = $("#bytes-chart");
  el.innerHTML = "";
  const series = [{ label: "bytes" }];
  dash.runs.forEach((run, i) => series.push({
    label: run.info.name + " (" + run.info.algorithm + ")", stroke: RUN_COLOURS[i % RUN_COLOURS.length],
    width: i === dash.current ? 2.5 : 1.6, points: { show: true, size: 4 }, spanGaps: true }));
  dash.bytesPlot = new uPlot({
    width: chartWidth(el), height: 230, legend: { show: dash.runs.length > 1, live: false },
    scales: { x: { time: false, distr: 3 }, y: { range: [0, 1] } },
    axes: [{ label: "cumulative bytes sent (training payload, all nodes)", values: (u, v) => v.map((x) => (x == null ? "" : fmtBytes(x))), size: 40 },
      { label: "mean test accuracy" }], series,
  }, bytesData(), el);
}

function bytesData() {
  const tables = dash.runs.map((run) => {
    const cum = cumulativeBytes(run);
    const pts = meanCurve(run).map(([k, a]) => [cum.get(k) || 0, a]).filter(([b]) => b > 0);
    // one mean per distinct byte count (uPlot.join wants unique ascending x)
    const byX = new Map(pts);
    const xs = [...byX.keys()].sort((a, b) => a - b);
    return [xs, xs.map((x) => byX.get(x))];
  });
  if (tables.every((t) => t[0].length === 0)) return [[], ...tables.map(() => [])];
  return tables.length === 1 ? tables[0] : uPlot.join(tables);
}

// ------------------------------------------------------------------ table
const COLUMNS = [
  ["node", "node", (n) => n.id],
  ["state", "state", (n) => n.state + (n.detail ? (n.state === "waiting" ? " " : ": ") + n.detail : ""), "text"],
  ["round", "round", (n) => n.round],
  ["acc", "test acc", (n) => n.acc],
  ["r", "r", (n) => n.r],
  ["density", "density", (n) => n.density],
  ["data_sent", "data sent", (n) => n.sent.data, "bytes"],
  ["data_recv", "data recv", (n) => n.recv.data, "bytes"],
  ["control_sent", "control sent", (n) => n.sent.control, "bytes"],
  ["control_recv", "control recv", (n) => n.recv.control, "bytes"],
  ["metrics_sent", "metrics sent", (n) => n.sent.metrics + n.sent.status, "bytes"],
  ["dropped", "dropped", (n) => n.dropped],
  ["dropped_by", "dropped by reason", (n) => n.droppedBy.replaceAll(" ", ", "), "text"],
  ["compute", "compute s", (n) => n.compute, "s"],
  ["comm", "comm/wait s", (n) => n.comm, "s"],
];

function buildTableHead() {
  const tr = $("#nodes thead tr");
  tr.innerHTML = "";
  for (const [key, title, , kind] of COLUMNS) {
    const th = document.createElement("th");
    th.textContent = title; th.dataset.key = key;
    if (kind === "text") th.className = "text";
    th.addEventListener("click", () => {
      dash.sort = { key, dir: dash.sort.key === key ? -dash.sort.dir : 1 };
      renderTable(dash.runs[dash.current]);
    });
    tr.appendChild(th);
  }
}

function cell(v, kind) {
  if (v == null || v === -1) return "-";
  if (kind === "bytes") return fmtBytes(v);
  if (kind === "s") return fmtS(v);
  if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(4);
  return esc(v);
}

function renderTable(run) {
  const col = COLUMNS.find((c) => c[0] === dash.sort.key) || COLUMNS[0];
  const rows = [...run.nodes.values()].sort((a, b) => {
    const x = col[2](a), y = col[2](b);
    if (x === y) return a.id - b.id;
    if (x == null) return 1;
    if (y == null) return -1;
    return (x < y ? -1 : 1) * dash.sort.dir;
  });
  for (const th of document.querySelectorAll("#nodes th")) {
    th.classList.toggle("sorted", th.dataset.key === col[0]);
    th.classList.toggle("asc", dash.sort.dir > 0); th.classList.toggle("desc", dash.sort.dir < 0);
  }
  const body = $("#nodes tbody");
  body.innerHTML = rows.map((n) => `<tr data-node="${n.id}"${dash.hover === n.id ? ' class="hl"' : ""}>` +
    COLUMNS.map(([key, , get, kind]) => `<td class="${kind === "text" ? "text " : ""}${key === "state" ? "state-col state-" + n.state : ""}">${cell(get(n), kind)}</td>`).join("") +
    "</tr>").join("");
}

// ------------------------------------------------------------------ header and rendering
function renderHeader(run) {
  const R = run.info.rounds;
  const k = minRound(run);
  $("#round").textContent = `round ${Math.max(k, 0)}/${R}`;
  $("#round").dataset.round = String(k);
  const curve = meanCurve(run);
  $("#mean-acc").textContent = curve.length ? `mean acc ${curve[curve.length - 1][1].toFixed(4)} (round ${curve[curve.length - 1][0]})` : "mean acc -";
  $("#bytes").textContent = `${fmtBytes(run.totalData)} sent`;
  const failed = [...run.nodes.values()].filter((n) => n.state === "failed").length;
  const st = $("#status");
  st.textContent = run.status + (failed ? ` (${failed} node${failed > 1 ? "s" : ""} failed)` : "") + (dash.ended ? "" : "");
  st.className = "stat " + (run.status.startsWith("finished: ok") ? "ok" : run.status === "running" ? "" : "bad");
  const m = $("#malformed");
  m.hidden = !run.malformed;
  m.textContent = `${run.malformed} unreadable line${run.malformed === 1 ? "" : "s"} skipped`;
  m.title = run.malformedNote || "";
  m.dataset.count = String(run.malformed);
  const i = run.info;
  $("#run-desc").textContent = `${i.algorithm} on ${i.dataset}, ${i.model}, codec ${i.codec}, ${i.nodes.length} nodes, ${i.edges.length} edges`;
}

function render() {
  dash.dirty = false;
  const run = dash.runs[dash.current];
  if (!run) return;
  renderHeader(run);
  updateGraph(run);
  if (dash.accPlot) dash.accPlot.setData(accData(run));
  if (dash.bytesPlot) dash.bytesPlot.setData(bytesData());
  renderTable(run);
  if (dash.hover != null) $("#tooltip").innerHTML = tooltipHtml(run.nodes.get(dash.hover));
}

function schedule() {
  if (!dash.dirty) { dash.dirty = true; requestAnimationFrame(render); }
}

function showRun(i) {
  dash.current = i; dash.hover = null; $("#tooltip").hidden = true;
  buildGraph(); buildAccPlot(); buildBytesPlot(); render();
}

function onMeta(meta) {
  dash.runs = meta.runs.map(newRun);
  const sel = $("#run-select");
  sel.innerHTML = meta.runs.map((r, i) => `<option value="${i}">${esc(r.name)} (${esc(r.algorithm)})</option>`).join("");
  sel.disabled = meta.runs.length < 2;
  dash.current = Math.min(dash.current, meta.runs.length - 1);
  sel.value = String(dash.current);
  buildTableHead();
  showRun(dash.current);
}

function connect() {
  const es = new EventSource("events");
  es.addEventListener("meta", (ev) => { dash.ended = false; onMeta(JSON.parse(ev.data)); });
  es.addEventListener("update", (ev) => applyUpdate(JSON.parse(ev.data)));
  es.addEventListener("end", () => {
    dash.ended = true; es.close();
    $("#status").textContent += " (server finished; this page keeps the data)";
  });
  es.onerror = () => {
    if (!dash.ended) $("#status").textContent = "disconnected, retrying (the page keeps what it has)";
  };
}

$("#run-select").addEventListener("change", (ev) => showRun(+ev.target.value));
window.addEventListener("resize", () => {
  for (const [p, el] of [[dash.accPlot, "#acc-chart"], [dash.bytesPlot, "#bytes-chart"]]) {
    if (p) p.setSize({ width: chartWidth($(el)), height: 230 });
  }
});
connect();
