// Assessor web console: vanilla JS, no build step. Polls compact JSON every 400 ms.
// Every text from the server is inserted with textContent (never innerHTML): notes, names and
// station data show as text, whatever they contain.
"use strict";

const POLL_MS = 400;
const SESSION_POLL_MS = 2000;
const NS = 1e9;
const LANES = [["agent", "Agent speech", "#1f77b4"], ["customer", "Customer speech", "#ff7f0e"],
  ["typing", "Typing", "#2ca02c"], ["mouse", "Mouse", "#9467bd"], ["focus", "Focus", null],
  ["dead_air", "Dead air", "#7f7f7f"], ["contacts", "Contacts", null]];
const CAT_COLORS = {crm: "#17becf", knowledge: "#bcbd22", script: "#8c564b", chat: "#e377c2",
  email: "#ff9896", typing_task: "#98df8a", other: "#dddddd"};
const KIND_COLORS = {phone: "#1f77b4", chat: "#e377c2", email: "#ff9896"};
// the same colours and labels as station/rendering.py (the reports); tests compare the two
const CAT_LABELS = {crm: "CRM", knowledge: "Knowledge base", script: "Script", chat: "Chat",
  email: "E-mail", typing_task: "Typing task", other: "Other window"};
const KIND_LABELS = {phone: "phone call", chat: "chat", email: "e-mail"};
const UNOBSERVED = "#cccccc";   // focus not observed ("unknown")
const SHORTCUTS = {"1": "C1", "2": "C2", "3": "C3"};

let ticks = 0;
let competences = [];
let current = null;   // {view, sid, timer, built}
let lastSessionFetch = 0;

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function say(text, ok) {
  const m = document.getElementById("msg");
  m.textContent = text;
  m.className = ok ? "ok" : (text ? "error" : "");
}

// The browser session: CSRF token for every POST, and who is logged in (logins configured).
let session = null;   // {csrf, assessor, logins, assessors}

async function loadSession() {
  const r = await fetch("/api/session", {cache: "no-store", credentials: "same-origin"});
  session = await r.json();
  document.getElementById("assessor").textContent = session.assessor ?
    `${session.assessor.name || session.assessor.id}` : "";
  document.getElementById("logout").hidden = !(session.logins && session.assessor);
  return session;
}

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store", credentials: "same-origin"});
  const body = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
  if (r.status === 401 && body.code === "login") { await loadSession(); showLogin(); }
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

async function post(url, body, retried) {
  if (!session) await loadSession();
  const r = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrf}, body: JSON.stringify(body)});
  const out = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
  if (r.status === 403 && out.code === "csrf" && !retried) {   // console restarted: new session
    await loadSession();
    return post(url, body, true);
  }
  if (r.status === 401 && out.code === "login") { await loadSession(); showLogin(); }
  if (!r.ok) throw new Error(out.error || `HTTP ${r.status}`);
  return out;
}

function showLogin() {
  if (current && current.timer) clearTimeout(current.timer);
  current = {view: "login"};
  const who = h("select", {id: "login-assessor"},
    (session.assessors || []).map(a => h("option", {value: a.id}, a.name ? `${a.name} (${a.id})` : a.id)));
  const pw = h("input", {id: "login-password", type: "password", autocomplete: "current-password"});
  const go = h("button", {id: "login-go", type: "submit"}, "Log in");
  const form = h("form", {id: "login", onsubmit: async ev => {
    ev.preventDefault();
    try {
      const out = await post("/api/login", {assessor_id: who.value, password: pw.value});
      session.csrf = out.csrf;
      await loadSession();
      say(`logged in as ${out.assessor.name || out.assessor.id}`, true);
      route();
    } catch (e) { say(e.message); }
  }}, h("h2", {}, "Log in"), h("label", {}, "Assessor ", who), " ",
    h("label", {}, "Password ", pw), " ", go);
  document.getElementById("view").replaceChildren(form);
}

function tick() {
  ticks += 1;
  document.getElementById("tick").textContent = String(ticks);
  document.body.dataset.ticks = String(ticks);
}

const pct = v => (v === null || v === undefined) ? "–" : `${Math.round(v * 100)} %`;
const secs = ms => (ms === null || ms === undefined) ? "–" : `${Math.floor(ms / 60000)}:${String(Math.floor(ms / 1000) % 60).padStart(2, "0")}`;

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : (Math.abs(v) < 10 ? v.toPrecision(3) : v.toFixed(1));
  if (Array.isArray(v)) return v.map(fmt).join(", ") || "–";
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}: ${fmt(x)}`).join("; ") || "–";
  return String(v);
}

// ------------------------------------------------------------------------------ room view
function cardEl(c) {
  const live = c.live || {};
  const ind = (cls, label, on) => h("span", {class: `ind ${cls}${on ? " on" : ""}`}, label);
  const contact = c.contact ? `${c.contact.kind} ${secs(c.contact.duration_ms)}` : "no contact";
  const stateLabel = c.red && c.state === "connected" ? "silent" : c.state;
  return h("div", {class: `card${c.red ? " red" : ""}`, "data-station": c.id, "data-state": stateLabel,
      onclick: () => { location.hash = `#/station/${encodeURIComponent(c.id)}`; }},
    h("h3", {}, h("span", {}, c.id), h("span", {class: `state ${stateLabel}`}, stateLabel)),
    c.simulated ? h("div", {class: "simulated", "data-field": "simulated"}, "SIMULATED — not an exam record") : null,
    h("div", {class: "cand"}, c.candidate.id ? `${c.candidate.name || ""} (${c.candidate.id})` : "no candidate assigned",
      c.exam.started ? (c.exam.ended ? " · exam ended" : " · exam running") : ""),
    h("div", {class: "fig", "data-field": "contact"}, `Contact: ${contact}`),
    h("div", {},
      ind("agt", "agent talking", live.agent_talking), ind("cust", "customer talking", live.customer_talking),
      ind("typ", "typing", live.typing), ind("mou", "mouse", live.mouse),
      h("span", {class: "ind on", style: `background:${CAT_COLORS[live.focus] || "#999"}`}, `focus: ${live.focus || "–"}`)),
    h("div", {class: "fig"}, `S1 ${pct(c.s1_share)} · S3 ${pct(c.s3_share)} (session) · contacts ${c.contacts}`),
    h("ul", {class: "alerts"}, c.alerts.map(a => h("li", {"data-alert": a.type}, a.text))));
}

async function pollRoom() {
  const d = await getJSON("/api/room");
  competences = d.competences;
  document.getElementById("assessor").textContent = `${d.assessor.name || d.assessor.id} (${d.assessor.id})`;
  if (current.view === "room") {
    const root = h("div", {class: "room", id: "room"}, d.stations.map(cardEl));
    document.getElementById("view").replaceChildren(h("h2", {}, "Room"), root);
  } else if (current.view === "setup") {
    renderSetup(d);
  }
  tick();
}

// ------------------------------------------------------------------------------ exam set-up
function renderSetup(d) {
  const view = document.getElementById("view");
  if (!current.built) {
    const rows = d.stations.map(c => {
      const id = h("input", {name: "candidate_id", maxlength: 64, placeholder: "candidate id"});
      const name = h("input", {name: "candidate_name", maxlength: 200, placeholder: "candidate name"});
      const act = (action) => async () => {
        try {
          await post(`/api/station/${encodeURIComponent(c.id)}/exam`,
            {action, candidate_id: id.value, candidate_name: name.value});
          say(`${c.id}: exam ${action} journaled on the station`, true);
        } catch (e) { say(`${c.id}: ${e.message}`); }
      };
      return h("tr", {"data-station": c.id}, h("td", {}, c.id), h("td", {"data-field": "current"}),
        h("td", {}, id, " ", name, h("button", {onclick: act("assign")}, "Assign")),
        h("td", {}, h("button", {onclick: act("start")}, "Start exam"), h("button", {onclick: act("end")}, "End exam")));
    });
    view.replaceChildren(h("h2", {}, "Exam set-up"),
      h("table", {id: "setup"}, h("tr", {}, h("th", {}, "Station"), h("th", {}, "Candidate now"),
        h("th", {}, "Assign candidate"), h("th", {}, "Exam")), rows));
    current.built = true;
  }
  for (const c of d.stations) {
    const cell = view.querySelector(`tr[data-station="${CSS.escape(c.id)}"] td[data-field=current]`);
    if (cell) cell.textContent = (c.candidate.id ? `${c.candidate.name} (${c.candidate.id})` : "–") +
      (c.exam.started ? (c.exam.ended ? ", ended" : ", running") : "") + ` · ${c.state}`;
  }
}

// ------------------------------------------------------------------------------ station view
function svgTimeline(tl, width) {
  const NSV = "http://www.w3.org/2000/svg";
  const lo = tl.start_ns, hi = tl.end_ns, span = Math.max(1, hi - lo);
  const labelW = 110, laneH = 16, height = laneH * LANES.length + 22;
  const scale = (width - labelW - 10) / span;
  const svg = document.createElementNS(NSV, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(NSV, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  LANES.forEach(([key, name, color], row) => {
    const y = row * laneH + 2;
    add("text", {x: 0, y: y + 11, "font-size": 11}, name);
    add("rect", {x: labelW, y, width: width - labelW - 10, height: laneH - 4, fill: "#f4f4f4"});
    for (const it of (tl.lanes[key] || [])) {
      let fill = color, title = "";
      if (key === "focus") { fill = CAT_COLORS[it[2]] || UNOBSERVED; title = it[2]; }
      if (key === "contacts") { fill = KIND_COLORS[it[2]] || "#333"; title = it[2]; }
      const r = add("rect", {x: (labelW + (it[0] - lo) * scale).toFixed(1), y,
        width: Math.max(0.5, (it[1] - it[0]) * scale).toFixed(1), height: laneH - 4, fill, "data-lane": key});
      const t = document.createElementNS(NSV, "title");
      t.textContent = `${title} ${((it[0] - lo) / NS).toFixed(1)}-${((it[1] - lo) / NS).toFixed(1)} s`;
      r.appendChild(t);
    }
  });
  const dur = span / NS;
  const step = [1, 5, 10, 30, 60, 300, 600, 1800, 3600].find(s => dur / s <= Math.max(6, width / 90)) || 3600;
  for (let t = 0; t <= dur; t += step) {
    add("text", {x: (labelW + t * NS * scale).toFixed(1), y: LANES.length * laneH + 14, "font-size": 10},
      step < 60 ? `${Math.floor(t / 60)}:${String(Math.floor(t % 60)).padStart(2, "0")}` : `${Math.floor(t / 60)} min`);
  }
  return svg;
}

// The legend under a timeline: lane colours, the focus lane's categories, the contact kinds.
function legend() {
  const sw = (key, color, label) => h("span", {class: "entry", "data-legend": key, "data-color": color},
    h("span", {class: "sw", style: `background:${color}`}), label);
  return h("div", {class: "legend", role: "note", "aria-label": "timeline legend"},
    LANES.filter(([, , c]) => c).map(([k, name, c]) => sw(k, c, name)), h("br"),
    h("b", {}, "Focus:"), Object.entries(CAT_COLORS).map(([k, c]) => sw(`focus:${k}`, c, CAT_LABELS[k])),
    sw("focus:unknown", UNOBSERVED, "not observed"),
    h("b", {}, "Contacts:"), Object.entries(KIND_COLORS).map(([k, c]) => sw(`contact:${k}`, c, KIND_LABELS[k])));
}

function buildStation(sid) {
  const view = document.getElementById("view");
  const enc = encodeURIComponent(sid);
  const counter = (cid, label, key) => h("button", {class: "counter", "data-counter": cid,
    onclick: () => count(sid, cid)}, `${cid} ${label} `, h("kbd", {}, key), " ", h("span", {"data-count": cid}, "0"));
  const compSel = h("select", {name: "competence"},
    competences.map(c => h("option", {value: c.id}, `${c.id} ${c.title}`)));
  const kindSel = h("select", {name: "kind"}, h("option", {value: "observed"}, "observed"),
    h("option", {value: "not_observed"}, "not observed"), h("option", {value: "note"}, "note only"),
    h("option", {value: "consensus_observed"}, "consensus: observed"),
    h("option", {value: "consensus_not_observed"}, "consensus: not observed"));
  const note = h("textarea", {name: "note", maxlength: 2000, placeholder: "note (optional)"});
  const markBtn = h("button", {id: "place-mark", onclick: async () => {
    const t0 = performance.now();
    try {
      await post(`/api/station/${enc}/mark`, {competence: compSel.value, kind: kindSel.value, text: note.value,
        age_ms: performance.now() - t0});
      say(`${sid}: mark ${compSel.value} ${kindSel.value} journaled`, true);
      note.value = "";
    } catch (e) { say(`${sid}: ${e.message}`); }
  }}, "Place mark");
  const contactBtn = (action, kind) => h("button", {"data-contact": `${action}-${kind}`, onclick: async () => {
    try {
      await post(`/api/station/${enc}/contact`, {action, kind, age_ms: 0});
      say(`${sid}: contact ${kind} ${action} journaled`, true);
    } catch (e) { say(`${sid}: ${e.message}`); }
  }}, `${action === "start" ? "Start" : "End"} ${kind}`);
  const endCurrent = h("button", {id: "end-contact", onclick: async () => {
    const k = current.endKind;
    if (!k) { say(`${sid}: no contact in progress`); return; }
    try {
      await post(`/api/station/${enc}/contact`, {action: "end", kind: k, age_ms: 0});
      say(`${sid}: contact ${k} end journaled`, true);
    } catch (e) { say(`${sid}: ${e.message}`); }
  }}, "End current contact");
  view.replaceChildren(
    h("h2", {}, h("a", {href: "#/"}, "Room"), " › ", sid, " ", h("span", {id: "st-state", class: "state"})),
    h("div", {id: "st-info", class: "fig"}),
    h("div", {}, "Report: ", h("a", {href: `/report/${enc}.html`, target: "_blank", id: "report-html"}, "HTML (printable)"), " · ",
      h("a", {href: `/report/${enc}.json`, target: "_blank"}, "JSON"), " · ",
      h("a", {href: `/report/${enc}.csv`}, "CSV")),
    h("div", {class: "controls"},
      h("fieldset", {}, h("legend", {}, "Counters (station clock)"), counter("C1", "reformulation", "1"),
        counter("C2", "clarifying question", "2"), counter("C3", "counter-argument", "3")),
      h("fieldset", {}, h("legend", {}, "Contact"), ["phone", "chat", "email"].map(k => contactBtn("start", k)),
        h("br"), endCurrent, ["phone", "chat", "email"].map(k => contactBtn("end", k))),
      h("fieldset", {id: "mark-form"}, h("legend", {}, "Mark"), compSel, " ", kindSel, h("br"), note, h("br"), markBtn)),
    h("h3", {}, "Last 5 minutes"), h("div", {class: "tlwrap", id: "tl-last5"}), legend(),
    h("h3", {}, "Whole session (scroll)"), h("div", {class: "tlwrap", id: "tl-session"}), legend(),
    h("h3", {}, "Current contact"), h("div", {id: "contact-now", class: "fig"}),
    h("h3", {}, "Competence board"), h("div", {id: "board"}),
    h("h3", {}, "Contacts"), h("div", {id: "contacts"}),
    h("h3", {}, "Marks"), h("div", {id: "marks"}));
  current.built = true;
  lastSessionFetch = 0;
}

async function count(sid, cid) {
  const t0 = performance.now();
  try {
    await post(`/api/station/${encodeURIComponent(sid)}/mark`, {competence: cid, kind: "counter", text: "",
      age_ms: performance.now() - t0});
    say(`${sid}: ${cid} counted`, true);
  } catch (e) { say(`${sid}: ${e.message}`); }
}

function table(head, rows) {
  return h("table", {}, h("tr", {}, head.map(x => h("th", {}, x))), rows);
}

function renderBoard(b) {
  const assessors = b.assessors;
  const rows = b.competences.map(c => h("tr", {"data-competence": c.id,
      class: [c.proven ? "proven" : "", c.disagree ? "disagree" : ""].join(" ").trim()},
    h("td", {}, c.id), h("td", {}, c.title),
    h("td", {"data-field": "figures"}, c.figures_text && c.figures_text.length ?
      c.figures_text.map((t, i) => i ? [h("br"), t] : t) : fmt(c.figures)), h("td", {}, c.rule || "–"),
    h("td", {class: c.auto === null || c.auto === undefined ? "na" : (c.auto ? "ok" : "bad")},
      c.auto === null || c.auto === undefined ? "assessor" : (c.auto ? "met" : "not met")),
    assessors.map(a => {
      const v = c.verdicts[a.id];
      const k = c.consensus[a.id];
      return h("td", {"data-assessor": a.id, class: v ? (v.verdict === "observed" ? "ok" : "bad") : "na",
          title: v && v.key_fp ? `key ${v.key_fp}` : (v ? "no key (unauthenticated)" : "")},
        v ? v.verdict.replace("_", " ") : "–", v && v.text ? h("div", {class: "note"}, v.text) : null,
        k ? h("div", {class: "consensus"}, `consensus: ${k.verdict.replace("_", " ")}`) : null);
    }),
    h("td", {"data-field": "agreement", class: c.disagree ? "bad" : ""}, c.disagree ?
      (Object.keys(c.consensus).length ? "disagree; consensus marks: " + Object.keys(c.consensus).length : "DISAGREE: consensus of both needed") : ""),
    h("td", {"data-field": "proven"}, c.proven ? "proven" : "not proven")));
  const ag = b.agreement || {};
  const kappa = ag.kappa === null || ag.kappa === undefined ? "–" : ag.kappa.toFixed(2);
  const summary = h("p", {id: "agreement"}, `Agreement ${(ag.raters || []).join(" / ") || "–"}: ` +
    `${ag.agree || 0} of ${ag.n || 0} verdicts alike, Cohen's kappa ${kappa}` +
    (ag.disagreements && ag.disagreements.length ? ` · disagree on ${ag.disagreements.join(", ")}` : ""));
  const who = a => (a.name || a.id) + (a.keys && a.keys.length ? ` [${a.keys.map(k => k.slice(0, 8)).join(", ")}]` : "");
  return h("div", {}, summary,
    table(["Id", "Competence", "Figures", "Rule", "Rule met", ...assessors.map(who), "Agreement", "Proven"], rows));
}

async function pollStation() {
  const sid = current.sid;
  const enc = encodeURIComponent(sid);
  const d = await getJSON(`/api/station/${enc}?window=last5`);
  if (current.sid !== sid || current.view !== "station") return;
  if (!current.built) buildStation(sid);
  const st = document.getElementById("st-state");
  const stateLabel = d.red && d.state === "connected" ? "silent" : d.state;
  st.textContent = stateLabel; st.className = `state ${stateLabel}`;
  document.getElementById("st-info").textContent =
    `Candidate: ${d.candidate.id ? `${d.candidate.name} (${d.candidate.id})` : "not assigned"} · session ${d.session || "–"}` +
    ` · clock offset ${d.offset_ms === null ? "–" : d.offset_ms.toFixed(2) + " ms"} (±${d.rtt_ms === null ? "–" : (d.rtt_ms / 2).toFixed(2)} ms)` +
    (d.alerts.length ? ` · ALERTS: ${d.alerts.map(a => a.text).join("; ")}` : "");
  const w1 = Math.max(600, document.getElementById("tl-last5").clientWidth - 4);
  document.getElementById("tl-last5").replaceChildren(svgTimeline(d.timeline, w1));
  const now = performance.now();
  if (now - lastSessionFetch > SESSION_POLL_MS) {
    lastSessionFetch = now;
    getJSON(`/api/station/${enc}?window=session`).then(s => {
      if (current.sid !== sid) return;
      const dur = (s.timeline.end_ns - s.timeline.start_ns) / NS;
      const box = document.getElementById("tl-session");
      const left = box.scrollLeft, atEnd = box.scrollLeft + box.clientWidth >= box.scrollWidth - 5;
      box.replaceChildren(svgTimeline(s.timeline, Math.max(w1, Math.round(dur * 2) + 120)));
      box.scrollLeft = atEnd ? box.scrollWidth : left;
    }).catch(e => say(e.message));
  }
  const c = d.contact_now;
  current.endKind = c ? c.kind : (Object.keys(d.open_markers)[0] || null);
  document.getElementById("contact-now").textContent = c ?
    `${c.kind} (${c.source}) ${secs(c.duration_ms)} · on-screen information work ${pct(c.s1_share)} of conversation (S1) · keyboard or mouse ${pct(c.s3_share)} of conversation (S3) · agent talk ${secs(c.agent_talk_ms)} · customer talk ${secs(c.customer_talk_ms)} · dead air ${fmt(c.dead_air_count)}×` :
    "no contact in progress";
  for (const cid of ["C1", "C2", "C3"]) {
    const by = d.counters[cid] || {};
    const mine = by[d.board.me] || 0;
    const total = Object.values(by).reduce((a, b) => a + b, 0);
    document.querySelector(`[data-count=${cid}]`).textContent = `${mine} (all ${total})`;
  }
  document.getElementById("board").replaceChildren(renderBoard(d.board));
  document.getElementById("contacts").replaceChildren(table(
    ["#", "Kind", "Duration (min:s)", "Agent talk (min:s)", "Customer talk (min:s)", "Dead air (3 s or more)",
     "S1: on-screen information work, share of conversation", "S3: keyboard or mouse, share of conversation",
     "S2: switches a minute", "Source"],
    d.contact_list.map((x, i) => h("tr", {}, h("td", {}, i + 1), h("td", {}, x.kind), h("td", {}, secs(x.duration_ms)),
      h("td", {}, secs(x.agent_talk_ms)), h("td", {}, secs(x.customer_talk_ms)), h("td", {}, fmt(x.dead_air_count)),
      h("td", {}, pct(x.s1_share)), h("td", {}, pct(x.s3_share)), h("td", {}, fmt(x.s2_switches_per_min)),
      h("td", {}, x.source)))));
  const t0 = d.timeline.start_ns;
  document.getElementById("marks").replaceChildren(table(["Station time", "Assessor", "Competence", "Kind", "Note"],
    d.marks.slice().reverse().map(m => h("tr", {"data-mark": m.mark_id || "", "data-assessor": m.assessor_id},
      h("td", {}, `${((m.t_ns - t0) / NS).toFixed(1)} s`),
      h("td", {title: m.key_fp ? `key ${m.key_fp}` : "no key (unauthenticated)"},
        `${m.assessor_name || m.assessor_id} · ${m.key_fp ? m.key_fp.slice(0, 8) : "no key"}`),
      h("td", {}, m.competence || "–"), h("td", {}, m.type === "mark" ? m.kind : `contact ${m.action} ${m.kind}`),
      h("td", {class: "note"}, m.text || "")))));
  tick();
}

// ------------------------------------------------------------------------------ routing
function route() {
  if (current && current.timer) clearTimeout(current.timer);
  const hash = location.hash || "#/";
  let m;
  if ((m = hash.match(/^#\/station\/(.+)$/))) current = {view: "station", sid: decodeURIComponent(m[1])};
  else if (hash === "#/setup") current = {view: "setup"};
  else current = {view: "room"};
  document.getElementById("view").replaceChildren(h("p", {}, "loading…"));
  const me = current;
  const loop = async () => {
    try {
      if (me.view === "station") {
        if (!competences.length) await pollRoom();
        await pollStation();
      } else await pollRoom();
      if (document.getElementById("msg").className === "error" && /server|fetch/i.test(document.getElementById("msg").textContent)) say("");
    } catch (e) {
      say(`server: ${e.message}`);
    }
    if (current === me) me.timer = setTimeout(loop, POLL_MS);
  };
  loop();
}

document.addEventListener("keydown", ev => {
  if (!current || current.view !== "station") return;
  const tag = (ev.target && ev.target.tagName) || "";
  if (["INPUT", "TEXTAREA", "SELECT"].includes(tag) || ev.ctrlKey || ev.altKey || ev.metaKey) return;
  const cid = SHORTCUTS[ev.key];
  if (cid) { ev.preventDefault(); count(current.sid, cid); }
});
window.addEventListener("hashchange", route);
document.getElementById("logout").addEventListener("click", async () => {
  try { await post("/api/logout", {}); } catch (e) { say(e.message); }
  await loadSession();
  showLogin();
});
loadSession().then(s => (s.logins && !s.assessor) ? showLogin() : route()).catch(e => say(`server: ${e.message}`));
