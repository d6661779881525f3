// The distproc dashboard: draws each update of /api/events (server-sent events).
//
// An update is {"at", "source", "error", "requeue", "report", "views"}: the
// report is the one `distproc status --json` prints; views[i] is what the
// server derived for report.services[i] (throughput, a map's ETA).
// Text from the report is set as text, never as HTML: worker names and
// errors come from other machines.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);

// -------------------------------------------------------------- formatting
function duration(seconds) {
  if (typeof seconds !== "number" || seconds < 0) return "–";
  if (seconds < 60) return seconds.toFixed(1) + "s";
  const whole = Math.floor(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (whole < 3600) return Math.floor(whole / 60) + "m" + pad(whole % 60) + "s";
  if (whole < 86400) return Math.floor(whole / 3600) + "h" + pad(Math.floor((whole % 3600) / 60)) + "m";
  return Math.floor(whole / 86400) + "d" + pad(Math.floor((whole % 86400) / 3600)) + "h";
}

function rate(perSecond) {
  if (typeof perSecond !== "number") return "–";
  return perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(perSecond >= 10 ? 1 : 2);
}

// el("td", {class: "num"}, "text", child, ...): an element with attributes and children.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A field the report does not have yet is shown as absent, never as zero.
function absent() {
  return el("span", { class: "absent", title: "not in this service's report" }, "n/a");
}

function field(obj, key, format) {
  if (!obj || !(key in obj)) return absent();
  const value = obj[key];
  if (value === null || value === undefined) return "–";
  return format ? format(value) : String(value);
}

function table(columns, rows, attrs) {
  const head = el("tr", null, columns.map(([name, cls]) => el("th", { class: cls }, name)));
  const body = rows.map(({ cells, attrs: rowAttrs }) =>
    el("tr", rowAttrs, cells.map((cell, i) => el("td", { class: columns[i][1] }, cell))));
  return el("div", { class: "scroll" }, el("table", attrs, el("thead", null, head), el("tbody", null, body)));
}

function section(title, count, ...children) {
  const heading = el("h2", null, title, count === undefined ? null : el("span", { class: "count" }, ` (${count})`));
  return el("section", null, heading, ...children);
}

// ---------------------------------------------------------------- the chart
// An SVG stretched to the page's width (its strokes keep their width); the
// labels are HTML beside it, so that they are never stretched.
function chart(points) {
  const ns = "http://www.w3.org/2000/svg";
  const W = 600, H = 100, SPAN = 600;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "tasks finished per second over the last 10 minutes");
  const top = Math.max(1, ...points.map((p) => p[1]));
  const x = (t) => W + (t / SPAN) * W;
  const y = (r) => H - 2 - (r / top) * (H - 8);
  const add = (tag, attrs) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    svg.append(node);
  };
  if (points.length > 0) {
    const line = points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    const first = x(points[0][0]).toFixed(1), last = x(points[points.length - 1][0]).toFixed(1);
    add("polygon", { points: `${first},${H} ${line} ${last},${H}`, class: "area" });
    add("polyline", { points: line, class: "line" });
  }
  return el("figure", { class: "throughput" },
    el("div", { class: "chart-top dim" }, `${rate(top)} tasks/s`),
    svg,
    el("div", { class: "chart-axis dim" }, el("span", null, "10 min ago"), el("span", null, "now")));
}

// ----------------------------------------------------------- the sections
// [shown as, key in the report's "tasks"]: a retry waiting out its backoff is "delayed" there.
const COUNTS = [["queued", "queued"], ["leased", "leased"], ["retrying", "delayed"],
  ["done", "done"], ["failed", "failed"], ["dead", "dead"], ["cancelled", "cancelled"],
  ["discarded", "discarded"], ["lease expired", "lease_expired"]];
// A worker that went stays in the table this long (seconds), with how it ended.
const GONE_SHOWN = 300;

function counts(tasks) {
  return el("div", { class: "cards" }, COUNTS.map(([name, key]) => {
    const bad = (key === "failed" || key === "dead") && tasks && tasks[key] > 0;
    return el("div", { class: "card" + (bad ? " bad" : ""), "data-count": key },
      el("div", { class: "value", id: `count-${key}` }, field(tasks, key)),
      el("div", { class: "name" }, name));
  }));
}

function workers(list, gone) {
  const columns = [["id"], ["host"], ["pid", "num"], ["slots", "num"], ["done", "num"],
    ["running", "num"], ["oldest running", "num"], ["since heartbeat", "num"],
    ["connected for", "num"], ["state"], ["quarantined"]];
  const rows = list.map((w) => ({
    attrs: { "data-worker": w.id, class: "worker" },
    cells: [w.id, w.host, w.pid, w.slots, w.done, field(w, "leased"),
      field(w, "oldest_running", duration), field(w, "heartbeat_ago", duration),
      field(w, "connected_for", duration), w.leaving ? "leaving" : "connected",
      (w.quarantined || []).length === 0 ? "–" :
        el("ul", { class: "plain" }, w.quarantined.map((q) =>
          el("li", null, el("code", null, q.function), ": ", q.error)))],
  }));
  const now = lastUpdate ? lastUpdate.at : Date.now() / 1000;
  const recent = (gone || []).filter((w) => typeof w.at === "number" && now - w.at <= GONE_SHOWN);
  for (const w of recent.reverse()) {  // the latest first
    const left = w.ended === "left";
    rows.push({
      attrs: { "data-worker": w.id, class: "worker gone" },
      cells: [w.id, w.host, w.pid, w.slots, w.done, "–", "–", "–", "–",
        el("span", { class: "ended" }, `${left ? "left" : "lost"} ${duration(now - w.at)} ago`,
          left ? null : el("span", { class: "how" }, ": ", w.ended)),
        "–"],
    });
  }
  return section("Workers", list.length, table(columns, rows, { id: "workers" }));
}

// The <details> a person opened stay open across redraws (keyed "task:part").
const opened = new Set();

function details(key, summary, ...content) {
  return el("details", {
    open: opened.has(key),
    ontoggle: (event) => { if (event.target.open) opened.add(key); else opened.delete(key); },
  }, el("summary", null, summary), ...content);
}

function deadLetters(list, canRequeue) {
  if (!list || list.length === 0) return section("Dead letters", 0, el("p", { class: "dim" }, "none"));
  const items = [...list].reverse().map((d) => {
    const button = el("button", {
      class: "requeue", type: "button", disabled: !canRequeue,
      title: canRequeue ? "put this task back on the queue" :
        "this dashboard cannot requeue dead letters",
      onclick: () => requeue(d.task, button),
    }, "Requeue");
    const attempts = (d.attempts || []).map(([worker, how]) => el("li", null, worker, ": ", how));
    return el("li", { class: "dead", "data-task": d.task },
      el("div", { class: "dead-head" },
        el("strong", null, `task ${d.task}`), " ", el("code", null, d.function || "?"),
        el("span", { class: "dim" }, d.at ? " · " + new Date(d.at * 1000).toLocaleString() : ""),
        button),
      el("p", { class: "reason" }, d.reason || ""),
      details(`${d.task}:attempts`, `workers it took down (${attempts.length})`,
        el("ul", { class: "plain" }, attempts)),
      details(`${d.task}:traceback`, "traceback", d.traceback
        ? el("pre", null, d.traceback)
        : el("p", { class: "dim" }, "none: its workers were lost before they could send one")));
  });
  return section("Dead letters", list.length, el("ul", { class: "plain dead-letters", id: "dead-letters" }, items));
}

function taskService(service, view) {
  const t = service.tasks || {};
  const throughput = el("p", { class: "rate" },
    el("strong", { id: "throughput" }, rate(service.throughput_1m)), " tasks/s over the last minute · ",
    `${service.masters ?? "–"} master${service.masters === 1 ? "" : "s"} · up ${duration(service.uptime)}`);
  return el("div", { class: "service tasks" },
    el("h2", null, "Task service ", el("span", { class: "dim" }, service.address || "")),
    counts(t), throughput,
    chart((view && view.throughput) || []),
    workers(service.workers || [], "gone_workers" in service ? service.gone_workers : null),
    deadLetters(service.dead_letters, lastUpdate && lastUpdate.requeue));
}

function mapRun(run, view) {
  const total = typeof run.total === "number" ? run.total : null;
  const share = total ? Math.min(1, run.done / Math.max(1, total)) : null;
  const eta = view && typeof view.eta === "number" ? duration(view.eta) : "–";
  return el("div", { class: "service map", "data-map": run.function },
    el("h2", null, "map ", el("code", null, run.function || "?")),
    el("div", { class: "progress" }, el("div", { class: "bar", style: null, "data-share": share ?? "" })),
    el("p", { class: "rate" },
      el("strong", { id: "map-done" }, String(run.done)), total === null ? " done" : ` of ${total} done`,
      share === null ? "" : ` (${(share * 100).toFixed(1)} %)`,
      ` · ${rate(view && view.rate)} calls/s · ETA `, el("strong", { id: "map-eta" }, eta),
      ` · running for ${duration(run.running_for)}`));
}

function manager(report) {
  const parts = [];
  if (report.note) parts.push(el("p", { class: "banner notice" }, report.note));
  if (Array.isArray(report.objects)) {
    const rows = report.objects.map((o) => ({
      attrs: { "data-object": o.id },
      cells: [o.id, o.typeid ?? "–", o.refcount, ...("repr" in o ? [o.repr] : [])],
    }));
    const columns = [["id", "num"], ["typeid"], ["refcount", "num"]];
    if (report.fallback) columns.push(["object"]);
    parts.push(section("Objects", report.objects.length, table(columns, rows, { id: "objects" })));
  }
  if (Array.isArray(report.clients)) {
    const rows = report.clients.map((c) => ({
      cells: [c.peer, c.protocol, duration(c.connected_for)],
    }));
    parts.push(section("Clients", report.clients.length,
      table([["peer"], ["protocol"], ["connected for", "num"]], rows, { id: "clients" })));
  }
  return parts;
}

// ---------------------------------------------------------------- drawing
let lastUpdate = null;

function draw(update) {
  lastUpdate = update;
  const report = update.report;
  $("where").textContent = update.source || "";
  $("updated").textContent = "updated " + new Date(update.at * 1000).toLocaleTimeString();
  $("error").hidden = !update.error;
  $("error").textContent = update.error ? `${update.error}; trying again` : "";
  if (!report) return;
  const services = report.services || [];
  const hostsTasks = services.some((s) => s && s.kind === "tasks");
  $("title").textContent = hostsTasks ? "distproc task service" : "distproc manager";
  document.title = `${hostsTasks ? "tasks" : "manager"} ${report.address || ""} · distproc`;
  $("services").replaceChildren(...services.map((service, i) => {
    const view = (update.views || [])[i];
    if (service && service.kind === "tasks") return taskService(service, view);
    if (service && service.kind === "map") return mapRun(service, view);
    return el("pre", { class: "other" }, JSON.stringify(service, null, 2));
  }));
  for (const bar of document.querySelectorAll(".progress .bar")) {
    const share = parseFloat(bar.dataset.share);
    bar.style.width = isNaN(share) ? "100%" : `${(share * 100).toFixed(2)}%`;
    if (isNaN(share)) bar.classList.add("unknown");
  }
  $("manager").replaceChildren(...manager(report));
}

async function requeue(task, button) {
  button.disabled = true;
  const notice = $("notice");
  try {
    const response = await fetch("api/requeue", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ tasks: [task] }),
      credentials: "same-origin",
    });
    const answer = await response.json();
    notice.textContent = response.ok
      ? (answer.requeued.length ? `task ${task} is back on the queue` : `task ${task} is no dead letter now`)
      : `requeue refused: ${answer.error}`;
  } catch (error) {
    notice.textContent = `requeue failed: ${error}`;
  }
  notice.hidden = false;
}

function connect() {
  const state = $("state");
  const events = new EventSource("api/events");
  events.onopen = () => { state.textContent = "live"; state.className = "state live"; };
  events.onerror = () => { state.textContent = "reconnecting…"; state.className = "state down"; };
  events.onmessage = (message) => draw(JSON.parse(message.data));
}

connect();
