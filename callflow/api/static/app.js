// The practice's page: callbacks to make, calendars, trunks; for an admin, the forwarding
// drills.  Plain JS calling the admin API with the session opened at login by the account,
// its token and a TOTP code (the session is kept in sessionStorage: this tab only; the
// token itself is never stored).
"use strict";

const SESSION = "callflow.session";
const USER = "callflow.user";
const ROLE = "callflow.role";
const REFRESH_MS = 30000;
let timer = null;

const $ = (id) => document.getElementById(id);

// The page's words in the daemon's [daemon] language, set by the server in the page.
let MESSAGES = null;
function t(key, values) {
  if (MESSAGES === null) MESSAGES = JSON.parse($("messages").textContent);
  const text = MESSAGES[key] === undefined ? key : MESSAGES[key];
  return text.replace(/\{(\w+)\}/g, (_, name) => String((values || {})[name]));
}
const LANG = () => document.documentElement.lang || undefined;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.entries(props || {}).forEach(([k, v]) => {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  });
  children.flat().forEach((c) => {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  });
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

class Unauthorized extends Error {}

async function api(method, path, body) {
  const session = sessionStorage.getItem(SESSION);
  // The session ended (a 401 already seen): send nothing more with it.
  if (!session) throw new Unauthorized("");
  const headers = { Authorization: "Bearer " + session };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  // A valid session is never braked (429), so either answer means this one has ended
  // (expired, or the daemon restarted): say so plainly, the login is open.
  if (resp.status === 401 || resp.status === 429) throw new Unauthorized(t("session_ended"));
  if (!resp.ok) throw new Error((data && data.error) || resp.status + " " + resp.statusText);
  return data;
}

// -- formatting -----------------------------------------------------------------------------

function waiting(seconds) {
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + " min";
  const h = Math.floor(minutes / 60);
  if (h < 48) return h + " h " + String(minutes % 60).padStart(2, "0");
  return Math.floor(h / 24) + " " + t("days");
}

function localTime(iso) {  // an instant, shown in this browser's time
  return iso ? new Date(iso).toLocaleString(LANG(), { dateStyle: "short", timeStyle: "short" }) : "";
}

function wallTime(iso) {  // already in the calendar's zone: show its wall-clock part
  return iso ? iso.slice(0, 16).replace("T", " ") : "—";
}

function tierBadge(tier) {
  return tier === null ? el("span", { class: "muted" }, "—")
    : el("span", { class: "badge tier-" + tier }, t("tier_n", { n: tier }));
}

// -- callbacks ------------------------------------------------------------------------------

function renderCallbacks(items) {
  const rank = (c) => (c.tier === null ? 99 : c.tier);
  items.sort((a, b) => rank(a) - rank(b) || a.created.localeCompare(b.created));
  const body = $("callbacks").querySelector("tbody");
  body.replaceChildren(...items.map((c) => {
    const button = el("button", { type: "button", class: "done", title: t("mark_called_back") }, t("done"));
    button.addEventListener("click", () => markDone(c.id, button));
    return el("tr", { class: c.overdue ? "overdue" : "", "data-callback-id": c.id },
      el("td", {}, tierBadge(c.tier)),
      el("td", {}, c.queue, el("span", { class: "muted" }, " · " + c.priority)),
      el("td", { class: "number" }, c.caller || t("erased")),
      el("td", {}, localTime(c.created)),
      el("td", { class: "waiting" }, waiting(c.waiting_seconds), c.overdue ? " " + t("overdue") : ""),
      el("td", {}, button));
  }));
  $("callback-count").textContent = String(items.length);
  $("no-callbacks").hidden = items.length > 0;
}

async function markDone(id, button) {
  button.disabled = true;
  try {
    await api("POST", "/api/callbacks/" + id + "/done", {});
    showError("");
  } catch (e) {
    handle(e);
  }
  await refresh();
}

// -- calendars ------------------------------------------------------------------------------

function tomorrowEight() {
  const d = new Date(Date.now() + 24 * 3600 * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T08:00";
}

function renderCalendars(items) {
  const body = $("calendars").querySelector("tbody");
  body.replaceChildren(...items.map((c) => {
    const state = el("td", { class: "state" },
      el("span", { class: "badge " + c.state }, t(c.state === "open" ? "open" : "closed")),
      c.overridden ? el("span", { class: "badge overridden" }, t("overridden")) : null);
    const until = el("input", { type: "datetime-local", value: tomorrowEight(), title: t("local_time_in", { tz: c.timezone }) });
    const change = el("div", { class: "change" }, until);
    const send = async (wanted) => {
      try {
        await api("POST", "/api/calendars/" + encodeURIComponent(c.flow) + "/" + encodeURIComponent(c.calendar) + "/override",
          { state: wanted, until: until.value, label: t("from_the_page") });
        showError("");
      } catch (e) { handle(e); }
      await refresh();
    };
    const close = el("button", { type: "button", class: "close-until" }, t("close_until"));
    close.addEventListener("click", () => send("closed"));
    const open = el("button", { type: "button", class: "open-until" }, t("open_until"));
    open.addEventListener("click", () => send("open"));
    change.append(close, open);
    if (c.overridden) {
      const cancel = el("button", { type: "button", class: "cancel-override" }, t("back_to_calendar"));
      cancel.addEventListener("click", async () => {
        try {
          await api("DELETE", "/api/calendars/" + encodeURIComponent(c.flow) + "/" + encodeURIComponent(c.calendar) + "/override");
          showError("");
        } catch (e) { handle(e); }
        await refresh();
      });
      change.append(cancel);
    }
    return el("tr", { "data-calendar": c.key },
      el("td", {}, c.calendar, el("span", { class: "muted" }, " · " + c.flow)),
      state,
      el("td", { class: "reason" }, reasonText(c)),
      el("td", { class: "until" }, wallTime(c.until)),
      el("td", {}, change));
  }));
}

// Why a calendar is in its state: the source in the page's words, then its label (a
// holiday's name comes in the daemon's language) or the daemon's detail.
function reasonText(c) {
  const source = t("reason_" + c.source);
  if (c.label && c.source !== "override" && c.source !== "weekly") return source + " : " + c.label;
  const colon = c.reason.indexOf(":");
  return colon > 0 && c.reason.slice(0, colon) === c.source ? source + c.reason.slice(colon) : c.reason;
}

// -- trunks ---------------------------------------------------------------------------------

function renderTrunks(data) {
  $("trunk-feed").textContent = t(data.live ? "live" : "no_live_feed");
  const body = $("trunks").querySelector("tbody");
  body.replaceChildren(...data.trunks.map((trunk) => el("tr", { "data-trunk": trunk.name },
    el("td", {}, trunk.name),
    el("td", { class: "state" }, el("span", { class: "badge " + trunk.state }, t(trunk.state)),
      trunk.breaker_open ? el("span", { class: "badge closed" }, t("breaker_open")) : null),
    el("td", {}, trunk.rtt_ms === null ? "—" : trunk.rtt_ms.toFixed(1) + " ms"),
    el("td", {}, String(trunk.consecutive_failures)))));
}

// Several nodes share the call log: the other nodes' trunks as each one last logged them.
function renderNodeTrunks(data) {
  const rows = Object.entries(data.nodes || {}).filter(([node]) => node !== data.node)
    .flatMap(([node, trunks]) => trunks.map((trunk) => el("tr", { "data-node": node },
      el("td", {}, node),
      el("td", {}, trunk.name),
      el("td", { class: "state" }, el("span", { class: "badge " + trunk.state }, t(trunk.state))),
      el("td", {}, new Date(trunk.since).toLocaleString(LANG())))));
  $("node-trunks").hidden = rows.length === 0;
  $("node-trunks").querySelector("tbody").replaceChildren(...rows);
}

// -- forwarding drills (admin) --------------------------------------------------------------

function drillVerdict(last) {
  return last === null ? el("span", { class: "badge unknown" }, t("never_drilled"))
    : el("span", { class: "badge " + (last.passed ? "reachable" : "unreachable") }, last.passed ? t("passed") : t("failed"));
}

function renderDrills(data) {
  const body = $("drills").querySelector("tbody");
  body.replaceChildren(...data.legs.map((leg) => {
    const last = leg.last;
    const verdict = drillVerdict(last);
    return el("tr", { "data-drill": leg.flow + "/" + leg.destination + "/" + leg.trunk },
      el("td", {}, leg.destination, el("span", { class: "muted" }, " · " + leg.flow),
        leg.mode === "health" ? el("span", { class: "muted" }, " " + t("trunk_health_only")) : null),
      el("td", {}, leg.trunk),
      el("td", { class: "state" }, verdict),
      el("td", {}, last === null ? "—" : localTime(last.at)),
      el("td", { class: "reason" }, last === null ? "" : drillReason(last)),
      el("td", {}, leg.last_success === null ? "—" : localTime(leg.last_success)));
  }));
  renderNodeDrills(data);
  const flows = [...new Set(data.legs.map((leg) => leg.flow))];
  $("drill-next").textContent = Object.entries(data.next).filter(([f]) => flows.includes(f))
    .map(([flow, when]) => when ? t("next_drill", { flow, when: localTime(when) }) : t("no_next_drill", { flow }))
    .join(" ; ");
  $("drill-buttons").replaceChildren(...flows.map((flow) => {
    const button = el("button", { type: "button", class: "run-drill", disabled: data.running, "data-flow": flow },
      data.running ? t("drill_running") : t("run_drill", { flow }));
    button.addEventListener("click", () => runDrill(flow, button));
    return button;
  }));
}

// Several nodes share the call log, each drilling over its own trunks: the other nodes'
// last results, apart from this node's.
function renderNodeDrills(data) {
  const rows = Object.entries(data.nodes || {}).filter(([node]) => node !== data.node)
    .flatMap(([node, legs]) => legs.map((leg) => el("tr", { "data-node-drill": node + "/" + leg.flow + "/" + leg.destination + "/" + leg.trunk },
      el("td", {}, node),
      el("td", {}, leg.destination, el("span", { class: "muted" }, " · " + leg.flow)),
      el("td", {}, leg.trunk),
      el("td", { class: "state" }, drillVerdict(leg.last)),
      el("td", {}, leg.last === null ? "—" : localTime(leg.last.at)),
      el("td", {}, leg.last_success === null ? "—" : localTime(leg.last_success)))));
  $("node-drills").hidden = rows.length === 0;
  $("node-drills").querySelector("tbody").replaceChildren(...rows);
}

// Why a leg passed, in the page's words; a failure keeps the daemon's own (the PBX's cause).
function drillReason(r) {
  if (r.mode === "health") return t(r.passed ? "line_reachable" : "line_not_reachable") + (r.passed ? "" : " — " + r.reason);
  if (r.passed && r.answer_delay !== null) return t("answered_in", { s: r.answer_delay.toFixed(1) });
  return r.reason;
}

async function runDrill(flow, button) {
  document.querySelectorAll("button.run-drill").forEach((b) => { b.disabled = true; });
  button.textContent = t("drill_running");
  try {
    await api("POST", "/api/drills/" + encodeURIComponent(flow));
    showError("");
  } catch (e) {
    handle(e);
  }
  await refresh();
}

// -- the page -------------------------------------------------------------------------------

function handle(e) {
  if (e instanceof Unauthorized) {
    if (sessionStorage.getItem(SESSION)) sessionEnded(e.message);  // once, at the first 401
  } else {
    showError(e.message);
  }
}

async function refresh() {
  try {
    // One request first: a session that has ended then costs one 401, not three.
    const callbacks = await api("GET", "/api/callbacks?status=pending");
    const [calendars, trunks] = await Promise.all([
      api("GET", "/api/calendars"),
      api("GET", "/api/trunks"),
    ]);
    renderCallbacks(callbacks.callbacks);
    renderCalendars(calendars.calendars);
    renderTrunks(trunks);
    renderNodeTrunks(trunks);
    const admin = sessionStorage.getItem(ROLE) === "admin";
    $("drills-section").hidden = !admin;
    if (admin) renderDrills(await api("GET", "/api/drills"));
    $("updated").textContent = new Date().toLocaleTimeString(LANG());
    document.body.dataset.loaded = "yes";
  } catch (e) {
    handle(e);
  }
}

function showApp() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = sessionStorage.getItem(USER) || "";
  refresh();
  if (timer === null) timer = setInterval(refresh, REFRESH_MS);
}

// The button: the daemon ends the session, then the tab forgets it.
function logout() {
  if (sessionStorage.getItem(SESSION)) api("POST", "/api/logout").catch(() => {});
  sessionEnded("");
}

// The session is over (logged out, or refused: then it is dead already, so no logout is sent
// with it): back to the login form.
function sessionEnded(message) {
  sessionStorage.removeItem(SESSION);
  sessionStorage.removeItem(ROLE);
  if (timer !== null) { clearInterval(timer); timer = null; }
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  showError(message || "");
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: $("user").value.trim(), token: $("token").value.trim(), code: $("code").value.trim() };
    $("token").value = "";
    $("code").value = "";
    try {
      const resp = await fetch("/api/login", {
        method: "POST", cache: "no-store",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const data = await resp.json().catch(() => null);
      if (!resp.ok) throw new Error((data && data.error) || resp.status + " " + resp.statusText);
      sessionStorage.setItem(SESSION, data.session);
      sessionStorage.setItem(USER, data.name + " (" + data.role + ")");
      sessionStorage.setItem(ROLE, data.role);
      showError("");
      showApp();
    } catch (e) {
      showError(e.message);
    }
  });
  $("logout").addEventListener("click", logout);
  if (sessionStorage.getItem(SESSION)) showApp();
});
