// What every page of the UI shares: the shell's meta tags, DOM building, the web API, the page
// frame (header and nav), client-side navigation, and small widgets (copy button, confirm).
//
// Pages draw with DOM calls only (no innerHTML of data, no inline style or script), so the
// strict Content-Security-Policy of the shell holds.
"use strict";

const RENEW_EVERY_MS = 3 * 60 * 1000; // the web session idles out after 10 minutes

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
export const SHELL = {
  cluster: meta("teleport-cluster"),
  bearer: meta("teleport-bearer"),
  user: meta("teleport-user"),
};
export const app = document.getElementById("app");

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** Builds an element: h("a", {href: "/x", class: "btn"}, "text", childNode, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function setTitle(text) {
  document.title = text ? `${text} · Teleport` : "Teleport";
}

/** A date as the user's locale shows it, with the ISO form kept in a <time> element. */
export function timeEl(iso) {
  if (!iso) return h("span", {class: "muted"}, "—");
  const date = new Date(iso);
  const text = Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString(undefined,
    {year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
      second: "2-digit"});
  return h("time", {datetime: iso}, text);
}

/** Milliseconds as h:mm:ss or m:ss. */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor((Number(ms) || 0) / 1000));
  const s = total % 60;
  const m = Math.floor(total / 60) % 60;
  const hours = Math.floor(total / 3600);
  const pad = (n) => String(n).padStart(2, "0");
  return hours ? `${hours}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

// ---------------------------------------------------------------------------------------------
// The web API

export class ApiError extends Error {
  constructor(status, message, code = "") {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the proxy's web API with the bearer token; throws ApiError with the server's message. */
export async function api(method, path, body) {
  const resp = await request(method, path, body);
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw apiError(resp, data);
  return data;
}

/** Like api() but hands back the Response for streaming (errors are still thrown). */
export async function apiStream(path) {
  const resp = await request("GET", path);
  if (!resp.ok) throw apiError(resp, await resp.json().catch(() => null));
  return resp;
}

async function request(method, path, body) {
  const headers = {Accept: "application/json"};
  if (SHELL.bearer) headers.Authorization = `Bearer ${SHELL.bearer}`;
  const init = {method, headers, credentials: "same-origin", cache: "no-store"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `cannot reach the proxy: ${err.message}`);
  }
}

function apiError(resp, data) {
  const message = data?.error?.message || (resp.status === 404
    ? `not available on this proxy (HTTP 404)` : `request failed: HTTP ${resp.status}`);
  return new ApiError(resp.status, message, data?.error?.code || "");
}

export const sitePath = (cluster, rest) => `/webapi/sites/${encodeURIComponent(cluster)}/${rest}`;

function currentPath() {
  return location.pathname + location.search + location.hash;
}

/** Leaves for the login page, coming back here after logging in. */
export function toLogin() {
  location.assign(`/web/login?redirect=${encodeURIComponent(currentPath())}`);
}

/** A 401/403 means the web session is gone (expired, logged out, user locked): log in again. */
export function isAuthError(err) {
  return err instanceof ApiError && (err.status === 401 || err.status === 403);
}

let renewTimer = null;
export function keepSessionAlive() {
  if (!SHELL.bearer || renewTimer !== null) return;
  renewTimer = setInterval(async () => {
    try {
      await api("POST", "/webapi/sessions/web/renew", {});
    } catch (err) {
      if (isAuthError(err) && !document.getElementById("terminal")) toLogin();
    }
  }, RENEW_EVERY_MS);
}

async function logout() {
  try {
    await api("DELETE", "/webapi/sessions/web", {}); // a JSON body, as every state change
  } catch {
    // Gone already or unreachable: the login page is still the right place to be.
  }
  location.assign("/web/login");
}

// ---------------------------------------------------------------------------------------------
// Navigation: app.js registers the router; pages register what to stop when they are left.

let router = () => {};
const leaving = [];

export function setRouter(fn) {
  router = fn;
}

/** Runs (once) what the page being left registered: timers, sockets, listeners. */
export function leavePage() {
  for (const fn of leaving.splice(0)) {
    try {
      fn();
    } catch {
      // a page's cleanup must not stop the next page from drawing
    }
  }
}

export function onLeave(fn) {
  leaving.push(fn);
}

/** Client-side navigation: no reload for links inside the app. */
export function navigate(path, replace = false) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  router();
}

// ---------------------------------------------------------------------------------------------
// Layout: header (cluster, nav, user, log out) + main.

const NAV = [
  {page: "nodes", label: "Nodes", href: (c) => `/web/cluster/${c}/nodes`},
  // A leaf cluster's sessions and recordings are not shown here yet (tsh takes --cluster).
  {page: "sessions", label: "Sessions", href: (c) => `/web/cluster/${c}/sessions`, own: true},
  {page: "recordings", label: "Recordings", href: (c) => `/web/cluster/${c}/recordings`, own: true},
  // Listed only when the user's roles allow what the page shows (the auth server refuses
  // others anyway): `need` names the context's flag.
  {page: "audit", label: "Audit log", href: (c) => `/web/cluster/${c}/audit`, need: "audit"},
  {page: "users", label: "Users", href: () => "/web/users", need: "admin"},
  {page: "tokens", label: "Tokens", href: () => "/web/tokens", need: "admin"},
  {page: "status", label: "Status", href: (c) => `/web/cluster/${c}/status`, need: "admin"},
  {page: "account", label: "Account", href: () => "/web/account"},
];

/** Draws the page frame and returns its <main>; admin links appear once the context says so. */
export function layout(cluster, current, title) {
  setTitle(title);
  const c = encodeURIComponent(cluster);
  const leaf = cluster !== SHELL.cluster;
  const navList = h("ul", {class: "nav-list"});
  const drawNav = (context) => {
    const shown = NAV.filter((item) => (!item.need || context[item.need]) && !(leaf && item.own));
    navList.replaceChildren(...shown.map((item) =>
      h("li", {}, h("a", {href: item.href(c), "data-route": true,
        "aria-current": item.page === current ? "page" : false}, item.label))));
  };
  drawNav({});
  const main = h("main", {id: "main", tabindex: "-1"});
  app.replaceChildren(
    h("a", {class: "skip-link", href: "#main"}, "Skip to content"),
    h("header", {class: "topbar"},
      h("div", {class: "brand"},
        h("span", {class: "logo", "aria-hidden": "true"}, "⟶"),
        h("span", {class: "brand-name"}, "Teleport"),
        h("span", {class: "cluster", id: "cluster-name", title: "Cluster"}, cluster),
        clusterPicker(cluster)),
      h("nav", {"aria-label": "Main", class: "mainnav"}, navList),
      h("div", {class: "account"},
        h("span", {class: "user", id: "current-user"}, SHELL.user),
        h("button", {type: "button", id: "logout", class: "btn btn-quiet", onclick: logout},
          "Log out"))),
    main);
  return {main, drawNav};
}

/**
 * The cluster picker: this proxy's cluster and the leaf clusters that trust it (trusted
 * clusters), shown once the list says there is more than one; picking one opens its nodes.
 */
function clusterPicker(cluster) {
  const picker = h("select", {id: "cluster-picker", class: "cluster-picker", hidden: true,
    "aria-label": "Cluster",
    onchange: (event) => navigate(`/web/cluster/${encodeURIComponent(event.target.value)}/nodes`)});
  api("GET", "/webapi/sites").then((sites) => {
    if (sites.length < 2) return;
    picker.replaceChildren(...sites.map((site) => h("option",
      {value: site.name, selected: site.name === cluster},
      site.status === "online" ? site.name : `${site.name} (offline)`)));
    picker.hidden = false;
    const name = document.getElementById("cluster-name");
    if (name) name.hidden = true;  // the picker shows the cluster now
  }).catch(() => {});  // no picker: the page itself says what went wrong
  return picker;
}

/** Fetches the user's context in the cluster; a refused session sends the user to log in. */
export async function loadContext(cluster) {
  return api("GET", sitePath(cluster, "context"));
}

/**
 * Draws the frame of a page and loads the context: resolves to {main, context}, or to null
 * after sending the user to log in (the web session is gone). A context that cannot load
 * (proxy unreachable) still yields the page, with the error shown in `error`.
 */
export async function framedPage(cluster, current, title, error) {
  const {main, drawNav} = layout(cluster, current, title);
  try {
    const context = await loadContext(cluster);
    drawNav(context);
    return {main, context};
  } catch (err) {
    if (isAuthError(err)) {
      toLogin();
      return null;
    }
    showError(error, err.message);
    return {main, context: null};
  }
}

export function errorBox(id) {
  return h("div", {id, class: "error", role: "alert", "aria-live": "assertive", hidden: true});
}

export function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

/** A polite live region for what a page just did ("user deleted", "3 of 10 events"). */
export function statusLine(id) {
  return h("p", {id, class: "count", role: "status", "aria-live": "polite"});
}

// ---------------------------------------------------------------------------------------------
// Widgets

/** A table with a caption and column headers; rows carry data-label for the phone layout. */
export function dataTable(id, caption, columns) {
  const tbody = h("tbody");
  const table = h("table", {id, class: "data"},
    h("caption", {class: "visually-hidden"}, caption),
    h("thead", {}, h("tr", {}, columns.map((label) =>
      h("th", {scope: "col"}, label || h("span", {class: "visually-hidden"}, "Actions"))))),
    tbody);
  return {table, tbody, wrap: h("div", {class: "table-wrap"}, table)};
}

export function emptyRow(columns, text) {
  return h("tr", {class: "empty"}, h("td", {colspan: String(columns)}, text));
}

export function cell(label, ...content) {
  return h("td", {"data-label": label}, ...content);
}


/** A read-only text field with a Copy button (signup links, tokens, commands). */
export function copyField(id, label, value, {multiline = false} = {}) {
  const field = multiline
    ? h("textarea", {id, readonly: true, rows: String(Math.min(8, value.split("\n").length)),
      class: "copy-value mono", spellcheck: "false"})
    : h("input", {id, readonly: true, class: "copy-value mono", spellcheck: "false"});
  field.value = value;
  const done = h("span", {class: "copy-done", role: "status", "aria-live": "polite"});
  const button = h("button", {type: "button", class: "btn btn-secondary", id: `${id}-copy`,
    "aria-label": `Copy ${label}`, onclick: async () => {
      field.select();
      try {
        await navigator.clipboard.writeText(value);
        done.textContent = "Copied";
      } catch {
        done.textContent = "Selected: press Ctrl+C to copy";
      }
      setTimeout(() => { done.textContent = ""; }, 4000);
    }}, "Copy");
  return h("div", {class: "field"},
    h("label", {for: id}, label),
    h("div", {class: "copy-row"}, field, button),
    done);
}

/** Asks a yes/no question in a modal <dialog>; resolves to true when confirmed. */
export function confirmAction(question, confirmLabel) {
  return new Promise((resolve) => {
    const yes = h("button", {type: "submit", value: "yes", class: "btn btn-danger",
      id: "confirm-yes"}, confirmLabel);
    const no = h("button", {type: "submit", value: "no", class: "btn btn-secondary",
      id: "confirm-no"}, "Cancel");
    const dialog = h("dialog", {id: "confirm-dialog", class: "dialog",
      "aria-labelledby": "confirm-question"},
    h("form", {method: "dialog"},
      h("p", {id: "confirm-question"}, question),
      h("div", {class: "dialog-actions"}, no, yes)));
    const back = document.activeElement;
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (back instanceof HTMLElement && back.isConnected) back.focus();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

// ---------------------------------------------------------------------------------------------
// xterm.js, shared by the console and the player

export const TERMINAL_OPTIONS = {
  fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace",
  fontSize: 14,
  theme: {background: "#14161a", foreground: "#e6e6e6", cursor: "#e6e6e6",
    selectionBackground: "#3b5b8c"},
};

/** Loads xterm.js and its addons (UMD builds that define globals) only where a page needs it. */
export async function loadXterm() {
  await import("./vendor/xterm/xterm.js");
  await Promise.all([import("./vendor/xterm/addon-fit.js"),
    import("./vendor/xterm/addon-canvas.js")]);
  return {
    Terminal: globalThis.Terminal,
    FitAddon: globalThis.FitAddon.FitAddon,
    CanvasAddon: globalThis.CanvasAddon.CanvasAddon,
  };
}
