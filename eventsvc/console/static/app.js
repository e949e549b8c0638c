// The eventsvc console: draws the page for location.pathname from the JSON API.
// Event data is attacker-controlled: every value goes into the page as text
// (textContent, text nodes, attributes set one by one), never as HTML.
"use strict";

const API = "/api/v1";
const main = () => document.getElementById("main");

// ------------------------------------------------------------------ DOM helpers

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function show(...nodes) {
  main().replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}

function link(path, text) {
  return h("a", { href: path }, text);
}

// only http(s) links leave the console: a `javascript:` URL in event data stays text
function outLink(url) {
  return /^https?:\/\//i.test(String(url)) ? h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, url) : String(url);
}

const enc = encodeURIComponent;
const eventLink = (id, seq) => link(`/ui/events/${enc(id)}` + (seq ? `?seq=${enc(seq)}` : ""), id);
const sensorLink = (name) => link(`/ui/sensors/${enc(name)}`, name);
const runLink = (id, text) => link(`/ui/runs/${enc(id)}`, text || id);

function outcomeBadge(outcome) {
  const cls = { success: "ok", failed: "bad", retry: "warn", skipped: "", superseded: "" }[outcome] ?? "";
  return h("span", { class: `badge ${cls}` }, outcome);
}

function time(text) {
  if (!text) return "";
  const d = new Date(text);
  return isNaN(d) ? String(text) : d.toLocaleString();
}

function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows));
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function message(text, bad) {
  return h("div", { class: bad ? "message bad" : "message" }, text);
}

// a collapsible JSON tree: objects and arrays as <details>, scalars typed by colour
function tree(value, key, depth = 0) {
  const label = key === undefined ? [] : [h("span", { class: "key" }, key), ": "];
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    const brief = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`;
    return h("li", {}, h("details", { open: depth < 2 },
      h("summary", {}, label, h("span", { class: "muted" }, brief)),
      h("ul", {}, entries.map(([k, v]) => tree(v, k, depth + 1)))));
  }
  const cls = typeof value === "string" ? "str" : typeof value === "number" ? "num" : "lit";
  return h("li", {}, label, h("span", { class: cls }, JSON.stringify(value)));
}

function jsonTree(value) {
  return h("ul", { class: "tree" }, tree(value));
}

// ------------------------------------------------------------------ API

class Unauthorized extends Error {}

async function api(path, options) {
  const resp = await fetch(API + path, { credentials: "same-origin", ...(options || {}) });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (resp.status === 401) throw new Unauthorized((body && body.error) || "login needed");
  if (!resp.ok && resp.status !== 207) throw new Error((body && body.error) || `HTTP ${resp.status}`);
  return body;
}

function post(path, payload) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
}

function query(names) {
  const q = new URLSearchParams(location.search);
  const out = {};
  for (const n of names) out[n] = q.get(n) || "";
  return out;
}

function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

function filterForm(fields, values) {
  return h("form", { class: "filters", method: "get" },
    fields.map((f) => h("input", { name: f, placeholder: f, value: values[f] || "", "aria-label": f })),
    h("button", { type: "submit" }, "Filter"));
}

// ------------------------------------------------------------------ pages

async function flowPage() {
  const o = await api("/overview");
  const health = healthLine(o.bus);
  const sources = table(["origin", "source", "type", "events"], o.sources.map((x) =>
    h("tr", {}, h("td", {}, x.origin), h("td", { class: "mono" }, x.source),
      h("td", { class: "mono" }, link(`/ui/events${qs({ type: x.type })}`, x.type)), h("td", {}, x.count))));
  const rejected = Object.entries(o.rejected || {});
  show(
    h("h1", {}, "Flow"),
    h("div", { class: "card", id: "bus-health" }, health),
    rejected.length ? h("div", { class: "card" }, h("h2", {}, "Rejected sensor changes"),
      rejected.map(([f, ps]) => h("pre", {}, [f, ...ps].join("\n")))) : null,
    h("h2", {}, "Subjects seen → sensors → triggers"),
    o.sensors.length ? graph(o) : message("No sensors are loaded."),
    h("h2", {}, "Sources seen (latest events)"),
    o.sources.length ? sources : message("No events stored yet."));
  document.getElementById("health").textContent = o.bus.connected ? "bus connected" : "bus DISCONNECTED";
  // live counts: drawn again every few seconds while the page is open
  clearTimeout(flowPage.timer);
  flowPage.timer = setTimeout(() => flowPage().catch(() => {}), 5000);
}

// the flow as a graph: three columns of nodes, joined by SVG curves drawn once laid out
function graph(o) {
  const wrap = h("div", { class: "graph", id: "flow" });
  const column = (title, note) => h("div", { class: "col" }, h("div", { class: "head" }, title, h("div", { class: "note" }, note)));
  const subjects = column("subjects seen", "among the latest events");
  const sensors = column("sensors", "matched: by this process since it started");
  const triggers = column("triggers", "runs among the latest results");
  const nodes = new Map();
  const edges = [];
  for (const x of o.subjects) {
    const n = h("div", { class: "node subject" }, h("div", { class: "mono" }, x.subject), h("div", { class: "muted" }, `${x.count} event${x.count === 1 ? "" : "s"}`));
    nodes.set(`s:${x.subject}`, n);
    subjects.append(n);
  }
  for (const s of o.sensors) {
    const n = h("div", { class: "node sensor", "data-sensor": s.name }, sensorLink(s.name),
      s.status !== "loaded" ? [" ", h("span", { class: "badge bad" }, s.status)] : null,
      s.dependencies.map((d) => h("div", { class: "mono muted" }, `${d.name}: ${d.eventSubject}`)),
      h("div", { class: "muted" }, `matched ${s.matchedHere ?? 0} · backlog ${s.backlog ?? "?"}`));
    nodes.set(`n:${s.name}`, n);
    sensors.append(n);
    for (const subject of s.listensTo) edges.push([`s:${subject}`, `n:${s.name}`]);
    for (const t of s.triggers) {
      const runs = Object.entries(t.runs);
      const tn = h("div", { class: "node trigger" }, h("strong", {}, t.name), ` (${t.kind}) `,
        runs.length ? runs.map(([k, c]) => [outcomeBadge(k), `${c} `]) : h("span", { class: "muted" }, "no runs yet"));
      nodes.set(`t:${s.name}/${t.name}`, tn);
      triggers.append(tn);
      edges.push([`n:${s.name}`, `t:${s.name}/${t.name}`]);
    }
  }
  if (!o.subjects.length) subjects.append(message("No events stored yet."));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "edges");
  const draw = () => {
    const box = wrap.getBoundingClientRect();
    svg.setAttribute("width", String(box.width));
    svg.setAttribute("height", String(box.height));
    svg.replaceChildren();
    for (const [from, to] of edges) {
      const a = nodes.get(from), b = nodes.get(to);
      if (!a || !b) continue;
      const ra = a.getBoundingClientRect(), rb = b.getBoundingClientRect();
      const x1 = ra.right - box.left, y1 = ra.top + ra.height / 2 - box.top;
      const x2 = rb.left - box.left, y2 = rb.top + rb.height / 2 - box.top;
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("d", `M${x1},${y1} C${x1 + 30},${y1} ${x2 - 30},${y2} ${x2},${y2}`);
      svg.append(path);
    }
  };
  wrap.append(svg, subjects, sensors, triggers);
  requestAnimationFrame(draw);
  window.onresize = draw;
  return wrap;
}

function healthLine(bus) {
  const parts = [h("strong", { class: bus.connected ? "ok" : "bad" }, bus.connected ? "NATS connected" : "NATS disconnected")];
  for (const [name, s] of Object.entries(bus.streams)) {
    parts.push(" · ", `${name} `, h("strong", {}, s.error ? "error" : String(s.messages)));
  }
  parts.push(" · dispatch backlog ", h("strong", {}, String(bus.dispatchBacklog ?? "?")));
  return parts;
}

function eventRow(e, live) {
  return h("tr", { class: live ? "live" : null, "data-id": e.id },
    h("td", {}, time(e.time)), h("td", { class: "mono" }, eventLink(e.id, e.seq)),
    h("td", { class: "mono" }, e.type), h("td", { class: "mono" }, e.source),
    h("td", { class: "mono" }, e.subject ?? ""), h("td", { class: "mono" }, e.natsSubject));
}

let tail = null;

async function eventsPage() {
  const f = query(["type", "source", "subject"]);
  const before = query(["before"]).before;
  const list = await api(`/events${qs({ ...f, before, limit: 100 })}`);
  const body = h("tbody", { id: "events-body" }, list.events.map((e) => eventRow(e, false)));
  const status = h("span", { id: "live-status", class: "muted" }, "connecting…");
  const last = list.events.length ? list.events[list.events.length - 1].seq : 0;
  show(h("h1", {}, "Events"), filterForm(["type", "source", "subject"], f),
    h("p", {}, "Live tail: ", status),
    h("table", { id: "events" }, h("thead", {}, h("tr", {}, ["time", "id", "type", "source", "subject", "NATS subject"].map((x) => h("th", {}, x)))), body),
    list.events.length >= 100 ? h("p", {}, link(`/ui/events${qs({ ...f, before: String(last) })}`, "Older events")) : null);
  if (tail) tail.close();
  tail = new EventSource(`${API}/events/stream${qs(f)}`);
  tail.onopen = () => { status.textContent = "live"; status.className = "ok"; };
  tail.onerror = () => { status.textContent = "reconnecting…"; status.className = "warn"; };
  tail.onmessage = (msg) => {
    let e;
    try { e = JSON.parse(msg.data); } catch (err) { return; }
    body.prepend(eventRow(e, true));
    while (body.children.length > 500) body.lastElementChild.remove();
  };
}

async function eventPage(id) {
  const seq = query(["seq"]).seq;
  const d = await api(`/events/${enc(id)}${qs({ seq })}`);
  const attrs = Object.entries(d.attributes).map(([k, v]) => [k, h("span", { class: "mono" }, typeof v === "string" ? v : JSON.stringify(v))]);
  const verdicts = d.verdicts.map((v) => {
    const why = v.matched ? `matched by ${v.matchedDependencies.join(", ")}`
      : v.dependencies.map((dep) => `${dep.name}: ${dep.failed || "conditions not met"}`).join("\n");
    return h("tr", { "data-sensor": v.sensor, class: v.matched ? "matched" : "unmatched" },
      h("td", {}, sensorLink(v.sensor)),
      h("td", {}, h("span", { class: `badge ${v.matched ? "ok" : ""}` }, v.matched ? "matched" : "not matched")),
      h("td", { class: "mono" }, h("div", { class: "why" }, why),
        h("details", { class: "lines" }, h("summary", {}, "every filter"),
          h("pre", {}, v.dependencies.map((dep) => [`dependency ${dep.name}: ${dep.matched ? "MATCHED" : "not matched"}`, ...dep.lines.map((l) => "  " + l)].join("\n")).join("\n")))));
  });
  const runs = d.runs.map((r) => runRow(r));
  show(h("h1", {}, "Event ", h("span", { class: "mono" }, d.attributes.id)),
    h("p", {}, link(`/ui/try${qs({ event: d.attributes.id, seq: String(d.seq) })}`, "Try a sensor on this event")),
    h("div", { class: "card" }, kv([["stream sequence", String(d.seq)], ["NATS subject", h("span", { class: "mono" }, d.natsSubject)], ...attrs])),
    h("h2", {}, "Sensors"), table(["sensor", "verdict", "why (the first filter that ruled it out)"], verdicts, { id: "verdicts" }),
    h("h2", {}, "Runs it caused"), runs.length ? runsTable(runs) : message("No trigger run recorded for this event (yet)."),
    h("h2", {}, "Data"), d.data === null || d.data === undefined ? message("No data.") : h("div", { id: "data" }, jsonTree(d.data)));
}

function runRow(r) {
  const detail = r.error || Object.entries(r.detail || {}).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
  return h("tr", { "data-run": r.id, "data-sensor": r.sensor },
    h("td", {}, runLink(r.id, time(r.time))), h("td", {}, sensorLink(r.sensor)),
    h("td", {}, r.trigger, r.dlqTrigger ? " (dlq)" : ""), h("td", {}, outcomeBadge(r.outcome)),
    h("td", {}, String(r.attempt ?? "")), h("td", {}, `${Math.round(r.durationMs || 0)} ms`),
    h("td", { class: "mono" }, (r.eventIds || []).map((id) => h("div", {}, eventLink(id)))),
    h("td", { class: "mono" }, detail));
}

function runsTable(rows) {
  return table(["time", "sensor", "trigger", "outcome", "attempt", "duration", "events", "error / detail"], rows, { id: "runs" });
}

async function runsPage() {
  const f = query(["sensor", "trigger", "outcome", "since"]);
  const list = await api(`/runs${qs({ ...f, limit: 200 })}`);
  show(h("h1", {}, "Runs"), filterForm(["sensor", "trigger", "outcome", "since"], f),
    list.runs.length ? runsTable(list.runs.map(runRow)) : message("No runs match."));
}

async function runPage(id) {
  const r = await api(`/runs/${enc(id)}`);
  const links = [];
  const walk = (v) => {
    if (typeof v === "string" && /^https?:\/\//i.test(v)) links.push(v);
    else if (v && typeof v === "object") Object.values(v).forEach(walk);
  };
  walk(r.detail);
  show(h("h1", {}, "Run ", h("span", { class: "mono" }, r.id)),
    h("div", { class: "card" }, kv([
      ["sensor", sensorLink(r.sensor)], ["trigger", `${r.trigger}${r.dlqTrigger ? " (dlq trigger)" : ""}`],
      ["outcome", outcomeBadge(r.outcome)], ["attempt", String(r.attempt)], ["duration", `${r.durationMs} ms`],
      ["time", time(r.time)], ["error", r.error || "—"],
      ["events", (r.eventIds || []).map((e) => h("div", { class: "mono" }, eventLink(e)))],
      ["links", links.length ? links.map((u) => h("div", {}, outLink(u))) : "—"]])),
    h("h2", {}, "Attempts"), (r.attempts || []).length ? runsTable(r.attempts.map(runRow)) : message("No other attempt recorded."),
    h("h2", {}, "Detail (what the trigger reported)"), jsonTree(r.detail || {}),
    h("h2", {}, "Body the trigger is given"),
    h("p", { class: "muted" }, "Rendered again from the stored events with the running sensor, as eventsvc test renders it."),
    r.rendered && r.rendered.body ? h("div", { id: "rendered" }, jsonTree(r.rendered.body)) : message((r.rendered && r.rendered.error) || "not available", true),
    h("h2", {}, "Events it fired on"), jsonTree(r.events || {}));
}

async function sensorsPage() {
  const list = await api("/sensors");
  show(h("h1", {}, "Sensors"),
    table(["name", "status", "dependencies", "triggers", "file"], list.sensors.map((s) => h("tr", {},
      h("td", {}, sensorLink(s.name)), h("td", {}, h("span", { class: `badge ${s.status === "loaded" ? "ok" : "bad"}` }, s.status)),
      h("td", { class: "mono" }, s.dependencies.map((d) => h("div", {}, `${d.name}: ${d.eventSubject}`))),
      h("td", {}, s.triggers.map((t) => h("div", {}, `${t.name} (${t.kind})`))),
      h("td", { class: "mono" }, s.file)))),
    Object.keys(list.rejected).length ? [h("h2", {}, "Rejected changes"), Object.entries(list.rejected).map(([f, ps]) => h("pre", {}, [f, ...ps].join("\n")))] : null);
}

async function sensorPage(name) {
  const s = await api(`/sensors/${enc(name)}`);
  show(h("h1", {}, "Sensor ", s.name),
    h("p", {}, link(`/ui/try${qs({ sensor: s.name })}`, "Try a change of this sensor on a stored event")),
    h("div", { class: "card" }, kv([["status", h("span", { class: `badge ${s.status === "loaded" ? "ok" : "bad"}` }, s.status)],
      ["file", h("span", { class: "mono" }, s.file)], ["backlog", String(s.backlog ?? "?")]])),
    s.problems.length ? [h("h2", {}, "Problems of the rejected change (the running version is kept)"), h("pre", {}, s.problems.join("\n"))] : null,
    h("h2", {}, "Dependencies → triggers"),
    h("div", { class: "flow" }, h("div", { class: "node" }, s.dependencies.map((d) => h("div", { class: "mono" }, `${d.name}: ${d.eventSubject}`))),
      h("div", { class: "arrow" }, "→"), h("div", { class: "node sensor" }, s.name), h("div", { class: "arrow" }, "→"),
      h("div", { class: "node trigger" }, s.triggers.map((t) => h("div", {}, `${t.name} (${t.kind})`, t.conditions ? ` when ${t.conditions}` : "")))),
    h("h2", {}, "Recent runs"), s.runs.length ? runsTable(s.runs.map(runRow)) : message("No runs yet."),
    h("h2", {}, "YAML"), h("pre", {}, s.yaml));
}

async function dlqPage(note) {
  const list = await api("/dlq");
  const who = await api("/whoami");
  const picked = new Set();
  const act = async (what, seqs) => {
    try {
      const r = await post(`/dlq/${what}`, { seqs });
      const failed = (r.failed || []).map((x) => `#${x.seq}: ${x.error}`);
      const done = what === "replay" ? `replayed ${r.replayed.map((x) => "#" + x.seq).join(", ") || "none"}` : `discarded ${r.discarded.map((x) => "#" + x).join(", ") || "none"}`;
      await dlqPage(message([done, ...failed].join("; "), failed.length > 0));
    } catch (e) {
      await dlqPage(message(String(e.message || e), true));
    }
  };
  const rows = list.letters.map((l) => {
    const ev = l.event || Object.values(l.events || {})[0];
    return h("tr", { "data-seq": l.seq },
      h("td", {}, h("input", { type: "checkbox", "aria-label": `select #${l.seq}`, onchange: (e) => { e.target.checked ? picked.add(l.seq) : picked.delete(l.seq); } })),
      h("td", {}, `#${l.seq}`), h("td", {}, sensorLink(l.sensor || "")), h("td", {}, l.trigger || ""),
      h("td", {}, l.reason || ""), h("td", { class: "mono" }, l.error || ""), h("td", {}, String(l.attempts ?? "")),
      h("td", { class: "mono" }, ev ? eventLink(ev.id) : "(not a CloudEvent)"),
      h("td", {}, h("button", { class: "replay", disabled: !who.write, onclick: () => act("replay", [l.seq]) }, "Replay"), " ",
        h("button", { class: "discard danger", disabled: !who.write, onclick: () => act("discard", [l.seq]) }, "Discard")));
  });
  show(h("h1", {}, "Dead letters"), note || null,
    who.write ? null : message("Replay and discard need the write token (EVENTSVC_UI_WRITE_TOKEN); log in with it at /ui/login."),
    h("p", {}, h("button", { class: "primary", disabled: !who.write, onclick: () => act("replay", [...picked]) }, "Replay selected"), " ",
      h("button", { class: "danger", disabled: !who.write, onclick: () => act("discard", [...picked]) }, "Discard selected")),
    list.letters.length ? table(["", "seq", "sensor", "trigger", "reason", "error", "attempts", "event", ""], rows, { id: "letters" }) : message("No dead letters."));
}

async function schedulesPage() {
  const s = await api("/schedules");
  show(h("h1", {}, "Schedules"),
    s.schedules.length ? table(["name", "expression", "zone", "next fire times", "last tick", "catch-up"], s.schedules.map((x) => h("tr", {},
      h("td", {}, x.name), h("td", { class: "mono" }, x.expression), h("td", {}, x.timezone),
      h("td", {}, x.next.map((t) => h("div", { class: "mono" }, t))), h("td", { class: "mono" }, x.lastTick || "never"),
      h("td", {}, `${x.catchup} (at most ${x.maxCatchupSeconds}s back)`)))) : message("No Schedule files."),
    s.problems.length ? h("pre", {}, s.problems.join("\n")) : null);
}

async function tryPage() {
  const q = query(["sensor", "event", "seq"]);
  let yaml = "";
  if (q.sensor) yaml = (await api(`/sensors/${enc(q.sensor)}`)).yaml;
  const text = h("textarea", { id: "try-yaml", rows: 22, cols: 100, spellcheck: "false", "aria-label": "Sensor YAML", class: "mono" });
  text.value = yaml;
  const event = h("input", { id: "try-event", placeholder: "event id", value: q.event, size: 50, "aria-label": "event id" });
  const out = h("div", { id: "try-out" });
  const run = async (e) => {
    e.preventDefault();
    out.replaceChildren(message("running…"));
    try {
      const r = await post("/try", { yaml: text.value, event: event.value.trim(), seq: q.event === event.value.trim() && q.seq ? Number(q.seq) : undefined });
      out.replaceChildren(r.ok ? message(r.fires.length ? `fires: ${r.fires.join(", ")}` : "no trigger fires") : message("the YAML has problems", true),
        h("pre", {}, r.report));
    } catch (err) { out.replaceChildren(message(String(err.message || err), true)); }
  };
  show(h("h1", {}, "Try a sensor"),
    h("p", { class: "muted" }, "The dry run of eventsvc test: the sensor below against a stored event. Nothing is published, no trigger runs, nothing is saved."),
    h("form", { onsubmit: run }, h("div", {}, text), h("p", {}, "against event ", event, " ", h("button", { type: "submit", class: "primary" }, "Dry run"))),
    out);
}

function loginPage(why) {
  const input = h("input", { type: "password", name: "token", placeholder: "token", autocomplete: "current-password", "aria-label": "token" });
  const out = h("div");
  const form = h("form", { class: "filters", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await post("/login", { token: input.value });
      const back = new URLSearchParams(location.search).get("next") || "/ui/";
      location.assign(back.startsWith("/ui/") ? back : "/ui/");
    } catch (err) { out.replaceChildren(message(String(err.message || err), true)); }
  } }, input, h("button", { type: "submit", class: "primary" }, "Log in"));
  show(h("h1", {}, "Log in"), why ? message(why) : null,
    h("p", {}, "Reading needs the token of EVENTSVC_UI_TOKEN; replaying and discarding dead letters need EVENTSVC_UI_WRITE_TOKEN."), form, out);
}

// ------------------------------------------------------------------ routing

const ROUTES = [
  [/^\/ui\/?$/, flowPage],
  [/^\/ui\/events\/?$/, eventsPage],
  [/^\/ui\/events\/(.+)$/, eventPage],
  [/^\/ui\/sensors\/?$/, sensorsPage],
  [/^\/ui\/sensors\/(.+)$/, sensorPage],
  [/^\/ui\/runs\/?$/, runsPage],
  [/^\/ui\/runs\/(.+)$/, runPage],
  [/^\/ui\/dlq\/?$/, () => dlqPage()],
  [/^\/ui\/schedules\/?$/, schedulesPage],
  [/^\/ui\/try\/?$/, tryPage],
  [/^\/ui\/login\/?$/, () => loginPage()],
];

async function route() {
  const path = location.pathname;
  for (const a of document.querySelectorAll("header nav a")) {
    const href = a.getAttribute("href");
    a.classList.toggle("active", href === "/ui/" ? path === "/ui/" : path.startsWith(href));
  }
  for (const [pattern, page] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    try {
      await page(...m.slice(1).map(decodeURIComponent));
    } catch (e) {
      if (e instanceof Unauthorized) loginPage(e.message);
      else show(h("h1", {}, "Error"), message(String(e.message || e), true));
    }
    document.body.dataset.ready = "1";
    return;
  }
  show(h("h1", {}, "Not found"), message(`No console page at ${path}.`, true));
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", route);
