// The audit viewer. Reads /v1/… on the admin listener; keeps the admin token in this tab's
// session storage and sends it as a bearer header (never in a URL, never in a cookie).
// Everything an event holds is written with textContent: nothing from the log is ever parsed
// as markup.

const TOKEN_KEY = "retention-proxy.admin-token";
const FILTERS = ["since", "until", "event_name", "actor", "resource", "decision", "outcome", "instance"];
const DEFAULT_SINCE = "7d";
const PAGE = 50;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// Timings of each view (load start to rendered), for the scale test and the curious.
window.viewerTimings = [];

/** An element with text children only. */
function el(tag, opts = {}, ...children) {
  const e = document.createElement(tag);
  if (opts.cls) e.className = opts.cls;
  if (opts.title) e.title = opts.title;
  if (opts.href) e.href = opts.href;
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

const text = (v) => (v === null || v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v));

/** A link to a view of this page: only our own query string, built by URLSearchParams. */
function viewLink(key, value, label) {
  const q = new URLSearchParams();
  q.set(key, value);
  return el("a", { href: "?" + q.toString() }, label);
}

class Unauthorised extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path) {
  const headers = {};
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  const r = await fetch(path, { headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
  if (r.status === 401) throw new Unauthorised();
  return r;
}

async function apiJson(path) {
  const r = await api(path);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
  return body;
}

function showLogin(refused) {
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = refused ? "That token was refused." : "";
  $("token").focus();
}

function status(msg, isError = false) {
  const s = $("status");
  s.textContent = msg;
  s.classList.toggle("error", isError);
}

// ------------------------------------------------------------------ cells

function utc(t) {
  const d = new Date(t);
  if (isNaN(d)) return el("span", {}, text(t));
  const iso = d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  const node = el("time", { title: "Local: " + d.toLocaleString() }, iso);
  node.dateTime = d.toISOString();
  return node;
}

function actorOf(e) {
  const u = e.userIdentity || {};
  return u.principal || u.proxyUser || u.chimeBearer || u.accessKeyId || u.tokenFingerprint || "";
}

function resourceIds(e) {
  const ids = [];
  for (const r of Array.isArray(e.resources) ? e.resources : []) if (r && typeof r.id === "string") ids.push(r.id);
  for (const c of Array.isArray(e.changes) ? e.changes : []) if (c && typeof c.resource === "string" && !ids.includes(c.resource)) ids.push(c.resource);
  return ids;
}

function retention(v) {
  if (v === null || v === undefined) return "?";
  if (typeof v === "number") return v + " d";
  return text(v);
}

function changesCell(e) {
  const td = el("td", { cls: "changes" });
  for (const c of Array.isArray(e.changes) ? e.changes : []) {
    td.append(el("div", { title: text(c.target) }, retention(c.previous), " → ", retention(c.new)));
  }
  return td;
}

function decisionCell(e) {
  const g = e.guardrail || {};
  const d = text(g.decision);
  const td = el("td", { cls: "decision " + (d === "deny" ? "deny" : d === "dry_run_deny" ? "dry" : "") });
  td.append(el("span", { cls: "badge" }, d === "deny" ? "refused" : d === "dry_run_deny" ? "would refuse" : d));
  const rules = Array.isArray(g.ruleIds) ? g.ruleIds.map(text) : [];
  if (rules.length) td.append(el("div", { cls: "rules" }, rules.join(", ")));
  if (g.reason) td.title = text(g.reason);
  return td;
}

function rowOf(e) {
  const d = e.guardrail && e.guardrail.decision;
  const tr = el("tr", { cls: d === "deny" ? "refused" : d === "dry_run_deny" ? "dry-refused" : "" });
  tr.append(el("td", {}, utc(e.eventTime)));
  tr.append(el("td", {}, text(e.proxyInstance)));
  tr.append(el("td", { cls: "actor" }, el("div", {}, actorOf(e)), el("div", { cls: "ua" }, text(e.userAgent))));
  tr.append(el("td", { title: text(e.eventSource) }, text(e.eventName)));
  const res = el("td", { cls: "resource" });
  for (const id of resourceIds(e)) res.append(el("div", {}, viewLink("resource", id, id)));
  tr.append(res);
  tr.append(changesCell(e));
  tr.append(decisionCell(e));
  const errorText = e.errorMessage ? text(e.errorCode) + ": " + text(e.errorMessage) : "";
  tr.append(el("td", { cls: "outcome " + text(e.outcome), title: errorText }, text(e.outcome), errorText ? el("div", { cls: "err" }, errorText) : null));
  tr.append(el("td", {}, viewLink("event", text(e.eventID), "details")));
  return tr;
}

// ------------------------------------------------------------------ views

/** The API query of the current filters (the time range bounded by default). */
function filterQuery() {
  const q = new URLSearchParams();
  for (const k of FILTERS) {
    const v = params.get(k);
    if (v) q.set(k, v);
  }
  if (!q.has("since")) q.set("since", DEFAULT_SINCE);
  return q;
}

async function listView() {
  $("list-view").hidden = false;
  const started = performance.now();
  let cursor = null;
  const load = async () => {
    const t0 = performance.now();
    const q = filterQuery();
    q.set("order", "newest");
    q.set("limit", String(PAGE));
    if (cursor) q.set("cursor", cursor);
    const body = await apiJson("/v1/events?" + q.toString());
    const rows = $("rows");
    for (const e of body.events) rows.append(rowOf(e));
    cursor = body.next_cursor;
    $("older").hidden = !cursor;
    const n = rows.children.length;
    status(n === 0 ? "No events match." : `${n} event${n === 1 ? "" : "s"} shown${cursor ? "; older ones follow" : ""}.`);
    return performance.now() - t0;
  };
  await load();
  window.viewerTimings.push({ view: "list", query: location.search, ms: performance.now() - started });
  $("older").onclick = async () => {
    const ms = await load().catch(fail);
    window.viewerTimings.push({ view: "older", ms });
  };
}

async function resourceView(id) {
  $("resource-view").hidden = false;
  $("resource-title").textContent = "Resource " + id;
  const started = performance.now();
  let cursor = null;
  const load = async () => {
    const q = new URLSearchParams({ resource: id, order: "newest", limit: String(PAGE) });
    if (cursor) q.set("cursor", cursor);
    const body = await apiJson("/v1/history?" + q.toString());
    if (!cursor) {
      const box = $("last-known");
      box.replaceChildren();
      if (!body.lastKnown.length) box.append(el("p", {}, "No retention value recorded for this resource yet."));
      for (const s of body.lastKnown) {
        box.append(el("p", { cls: "current" }, "Last known ", el("strong", {}, text(s.target)), ": ",
          el("span", { cls: "value" }, retention(s.value)), " (", utc(s.seenAt), ", ", viewLink("event", text(s.eventID), "event"), ")"));
      }
    }
    for (const e of body.events) {
      const d = e.guardrail && e.guardrail.decision;
      const li = el("li", { cls: d === "deny" ? "refused" : d === "dry_run_deny" ? "dry-refused" : "" });
      li.append(el("div", { cls: "when" }, utc(e.eventTime), " · ", text(e.proxyInstance)));
      const what = el("div", { cls: "what" }, el("strong", {}, text(e.eventName)), " by ", actorOf(e));
      li.append(what);
      for (const c of Array.isArray(e.changes) ? e.changes : []) {
        if (c && c.resource && c.resource !== id && !resourceIds(e).includes(id)) continue;
        li.append(el("div", { cls: "change" }, text(c.target) + ": ", el("span", { cls: "prev" }, retention(c.previous)), " → ", el("span", { cls: "new" }, retention(c.new))));
      }
      const g = e.guardrail || {};
      const rules = Array.isArray(g.ruleIds) && g.ruleIds.length ? " (" + g.ruleIds.map(text).join(", ") + ")" : "";
      li.append(el("div", { cls: "verdict" }, "decision: ", el("span", { cls: "badge" }, text(g.decision) + rules), " · outcome: ", text(e.outcome), " · ", viewLink("event", text(e.eventID), "details")));
      $("timeline").append(li);
    }
    cursor = body.next_cursor;
    $("older-history").hidden = !cursor;
    const n = $("timeline").children.length;
    status(`${n} event${n === 1 ? "" : "s"} for this resource, newest first.`);
  };
  await load();
  window.viewerTimings.push({ view: "resource", ms: performance.now() - started });
  $("older-history").onclick = () => load().catch(fail);
}

async function eventView(id) {
  $("event-view").hidden = false;
  $("filters").hidden = true;
  $("dl-csv").hidden = $("dl-json").hidden = true;
  const started = performance.now();
  $("event-title").textContent = "Event " + id;
  const q = new URLSearchParams({ event: id });
  $("event-link").href = "?" + q.toString();
  const r = await api("/v1/events/" + encodeURIComponent(id));
  if (r.status === 404) {
    status("No event with this id.", true);
    return;
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
  $("event-json").textContent = JSON.stringify(body.cloudTrailEvent, null, 2);
  const g = body.event.guardrail || {};
  status(g.decision === "deny" ? "This call was refused by a guardrail." : g.decision === "dry_run_deny" ? "A dry-run guardrail would have refused this call." : "");
  $("copy").onclick = async () => {
    try {
      await navigator.clipboard.writeText($("event-json").textContent);
      $("copied").textContent = "Copied.";
    } catch {
      const range = document.createRange();
      range.selectNodeContents($("event-json"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      $("copied").textContent = "Selected: press Ctrl+C to copy.";
    }
  };
  window.viewerTimings.push({ view: "event", ms: performance.now() - started });
}

async function chainStatus() {
  const box = $("chain");
  try {
    const body = await apiJson("/v1/chain");
    box.replaceChildren();
    for (const c of body.instances) {
      const checked = c.checkedAt ? " (checked " + new Date(c.checkedAt).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") + ")" : "";
      box.append(el("span", { cls: "chain-" + text(c.state), title: text(c.reason) }, text(c.instance) + ": " + text(c.text) + checked));
    }
  } catch (e) {
    if (!(e instanceof Unauthorised)) box.textContent = "chain status unavailable";
  }
}

async function download(format) {
  const q = filterQuery();
  q.set("order", "newest");
  q.set("format", format);
  try {
    const r = await api("/v1/events?" + q.toString());
    if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || "HTTP " + r.status);
    const more = r.headers.get("x-next-cursor");
    const blob = await r.blob();
    const a = el("a", { href: URL.createObjectURL(blob) });
    a.download = format === "csv" ? "audit-events.csv" : "audit-events.json";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    if (more) status("The download stopped at the size limit: narrow the time range, or use `audit export`.", true);
  } catch (e) {
    fail(e);
  }
}

function fail(e) {
  if (e instanceof Unauthorised) {
    showLogin(!!token());
    return;
  }
  status("Error: " + text(e && e.message), true);
}

// ------------------------------------------------------------------ start

function fillFilters() {
  const form = $("filters");
  for (const k of FILTERS) {
    const input = form.elements[k];
    if (input) input.value = params.get(k) || (k === "since" ? DEFAULT_SINCE : "");
  }
  form.onsubmit = (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const k of FILTERS) {
      const v = form.elements[k].value.trim();
      if (v && !(k === "since" && v === DEFAULT_SINCE)) q.set(k, v);
    }
    const s = q.toString();
    location.assign(s ? "?" + s : "./");
  };
  $("reset").onclick = () => location.assign("./");
}

async function start() {
  $("login-form").onsubmit = (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    location.reload();
  };
  $("logout").onclick = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  };
  $("dl-csv").onclick = () => download("csv");
  $("dl-json").onclick = () => download("json");
  fillFilters();
  try {
    // One call first: a 401 shows the token form before anything else is drawn.
    await apiJson("/v1/chain");
  } catch (e) {
    return fail(e);
  }
  $("main").hidden = false;
  $("logout").hidden = !token();
  chainStatus();
  try {
    if (params.get("event")) await eventView(params.get("event"));
    else if (params.get("resource")) await resourceView(params.get("resource"));
    else await listView();
    document.body.dataset.ready = "1";
  } catch (e) {
    fail(e);
    document.body.dataset.ready = "error";
  }
}

start();
