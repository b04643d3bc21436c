// The proxy's browser UI: plain ES modules, no framework, no build step.
//
// The proxy answers every /web page with the same shell HTML; its <meta> tags carry the cluster,
// the user and the web session's bearer token (empty when logged out). This module routes on
// location.pathname and draws the login, nodes and console pages; core.js holds what pages
// share, and the other pages live in their own modules (sessions.js, player.js, audit.js,
// admin.js), loaded when first visited.
"use strict";

import {
  SHELL, app, h, setTitle, api, sitePath, toLogin, isAuthError, keepSessionAlive, layout,
  loadContext, errorBox, showError, setRouter, leavePage, onLeave, navigate, loadXterm,
  TERMINAL_OPTIONS,
} from "./core.js";

const RESIZE_DEBOUNCE_MS = 150;

// ---------------------------------------------------------------------------------------------
// Routing: every route is also a server URL answering the shell, so a reload lands on the page.

/** A page in a module of its own, imported the first time it is visited. */
const lazy = (module, name) => async (...args) => (await import(module))[name](...args);

const ROUTES = [
  [/^\/web\/login\/?$/, () => loginPage()],
  [/^\/web\/?$/, () => navigate(`/web/cluster/${encodeURIComponent(SHELL.cluster)}/nodes`, true)],
  [/^\/web\/cluster\/([^/]+)\/nodes\/?$/, (c) => nodesPage(c)],
  [/^\/web\/cluster\/([^/]+)\/console\/node\/([^/]+)\/([^/]+)\/?$/,
    (c, node, login) => consolePage({cluster: c, node, login})],
  [/^\/web\/cluster\/([^/]+)\/node\/([^/]+)\/([^/]+)\/([^/]+)\/?$/,
    (c, node, login, sid) => consolePage({cluster: c, node, login, sid})],
  [/^\/web\/cluster\/([^/]+)\/sessions\/?$/, lazy("./sessions.js", "activeSessionsPage")],
  [/^\/web\/cluster\/([^/]+)\/recordings\/?$/, lazy("./sessions.js", "recordingsPage")],
  [/^\/web\/cluster\/([^/]+)\/session\/([^/]+)\/?$/, lazy("./player.js", "playerPage")],
  [/^\/web\/cluster\/([^/]+)\/audit\/?$/, lazy("./audit.js", "auditPage")],
  [/^\/web\/users\/?$/, () => lazy("./admin.js", "usersPage")(SHELL.cluster)],
  [/^\/web\/tokens\/?$/, () => lazy("./admin.js", "tokensPage")(SHELL.cluster)],
  [/^\/web\/account\/?$/, lazy("./mfa.js", "accountPage")],
  [/^\/web\/cluster\/([^/]+)\/status\/?$/, lazy("./admin.js", "statusPage")],
];

const PUBLIC_PAGES = [/^\/web\/login\/?$/];

function route() {
  leavePage();
  const path = location.pathname;
  if (!SHELL.bearer && !PUBLIC_PAGES.some((re) => re.test(path))) {
    toLogin();
    return;
  }
  keepSessionAlive();
  for (const [re, render] of ROUTES) {
    const match = re.exec(path);
    if (match) {
      Promise.resolve(render(...match.slice(1).map(decodeURIComponent))).catch((err) => {
        const {main} = layout(SHELL.cluster, "", "Error");
        const box = errorBox("page-error");
        main.append(h("h1", {}, "This page failed to load"), box);
        showError(box, String(err?.message || err));
      });
      return;
    }
  }
  notFound();
}
setRouter(route);

document.addEventListener("click", (event) => {
  const link = event.target.closest?.("a[data-route]");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", route);

// ---------------------------------------------------------------------------------------------
// Login

function safeRedirect(value) {
  if (!value) return "/web";
  try {
    const url = new URL(value, location.origin);
    if (url.origin === location.origin && url.pathname.startsWith("/web") &&
        !url.pathname.startsWith("/web/login")) {
      return url.pathname + url.search + url.hash;
    }
  } catch {
    // fall through
  }
  return "/web";
}

function loginPage() {
  setTitle("Log in");
  const error = errorBox("login-error");
  const submit = h("button", {type: "submit", id: "login-submit", class: "btn btn-primary"},
    "Log in");
  const form = h("form", {id: "login-form", class: "card", novalidate: true},
    h("h1", {}, "Log in to ", h("span", {class: "cluster-inline"}, SHELL.cluster)),
    h("div", {class: "field"},
      h("label", {for: "login-user"}, "Username"),
      h("input", {id: "login-user", name: "user", autocomplete: "username", required: true,
        autocapitalize: "none", spellcheck: "false"})),
    h("div", {class: "field"},
      h("label", {for: "login-password"}, "Password"),
      h("input", {id: "login-password", name: "password", type: "password", required: true,
        autocomplete: "current-password"})),
    h("div", {class: "field"},
      h("label", {for: "login-otp"}, "Authenticator code"),
      h("input", {id: "login-otp", name: "otp", inputmode: "numeric", pattern: "[0-9]{6}",
        maxlength: "6", autocomplete: "one-time-code", required: true,
        "aria-describedby": "login-otp-help"}),
      h("p", {id: "login-otp-help", class: "help"}, "The 6-digit code from your authenticator app.")),
    error,
    submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const user = String(data.get("user")).trim();
    const otp = String(data.get("otp")).replace(/\s+/g, "");
    if (!user || !data.get("password")) {
      showError(error, "enter your username and password");
      return;
    }
    // form.dataset.otp (mfa.js): "" the code is required, "optional" (else a security key),
    // "none" (a security key only), "off" (no second factor unless a code is typed).
    const mode = form.dataset.otp || "";
    const keyStep = mode === "none" || (mode === "optional" && !otp);
    if ((mode !== "off" || otp) && !keyStep && !/^[0-9]{6}$/.test(otp)) {
      showError(error, "enter the 6-digit code from your authenticator app");
      document.getElementById("login-otp").focus();
      return;
    }
    showError(error, "");
    submit.disabled = true;
    try {
      if (keyStep) {
        await (await import("./mfa.js")).keyLogin(user, String(data.get("password")));
      } else {
        await api("POST", "/webapi/sessions/web",
          {user, pass: data.get("password"), second_factor_token: otp});
      }
      // A fresh shell carries the new bearer token: nothing is kept in localStorage.
      location.assign(safeRedirect(new URLSearchParams(location.search).get("redirect")));
    } catch (err) {
      showError(error, err.message);
      submit.disabled = false;
      document.getElementById("login-password").select();
    }
  });
  const sso = h("nav", {id: "login-sso", class: "sso", "aria-label": "Single sign-on", hidden: true});
  form.append(sso);
  app.replaceChildren(
    h("header", {class: "topbar topbar-plain"},
      h("div", {class: "brand"},
        h("span", {class: "logo", "aria-hidden": "true"}, "⟶"),
        h("span", {class: "brand-name"}, "Teleport"))),
    h("main", {id: "main", class: "center"}, form));
  document.getElementById("login-user").focus();
  showConnectors(sso);
  // Security keys: the code field as the cluster's second factor asks, a passkey button.
  import("./mfa.js").then((mfa) => mfa.setupLogin(form, error, () =>
    location.assign(safeRedirect(new URLSearchParams(location.search).get("redirect")))))
    .catch(() => {});
}

/** One button per GitHub or OIDC connector the cluster offers (from the ping). */
async function showConnectors(nav) {
  let ping;
  try {
    ping = await api("GET", "/webapi/ping");
  } catch {
    return; // the password form still works
  }
  const connectors = (ping.auth && ping.auth.connectors) || [];
  if (!connectors.length) return;
  nav.replaceChildren(h("p", {class: "sso-title"}, "Or log in with"),
    ...connectors.map((c) => h("a", {
      class: "btn btn-secondary sso-button", "data-connector": c.name,
      href: `/webapi/${encodeURIComponent(c.kind)}/login/web?` +
        new URLSearchParams({connector_id: c.name}).toString(),
    }, c.display || c.name)));
  nav.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Nodes

/** True when the node matches every whitespace-separated term: `k=v` a label, else a substring. */
function nodeMatches(node, terms) {
  const labels = Object.entries(node.labels || {});
  return terms.every((term) => {
    const eq = term.indexOf("=");
    if (eq > 0) {
      const key = term.slice(0, eq);
      const value = term.slice(eq + 1);
      return labels.some(([k, v]) => k.toLowerCase() === key && String(v).toLowerCase() === value);
    }
    return [node.name, node.addr, ...labels.flat()].some(
      (text) => String(text ?? "").toLowerCase().includes(term));
  });
}

const SORT_KEYS = {
  name: (n) => n.name.toLowerCase(),
  addr: (n) => (n.tunnel ? "" : n.addr || ""),
};

async function nodesPage(cluster) {
  const {main, drawNav} = layout(cluster, "nodes", "Nodes");
  const error = errorBox("nodes-error");
  const search = h("input", {id: "node-search", type: "search", autocomplete: "off",
    placeholder: "hostname or env=prod", "aria-describedby": "node-search-help",
    "aria-controls": "nodes-table"});
  const count = h("p", {id: "node-count", class: "count", role: "status", "aria-live": "polite"});
  const tbody = h("tbody");
  const sort = {key: "name", dir: 1};
  const headerCells = {};
  const sortable = (key, label) => {
    const button = h("button", {type: "button", class: "sort", "data-sort": key,
      onclick: () => {
        sort.dir = sort.key === key ? -sort.dir : 1;
        sort.key = key;
        draw();
      }}, label, h("span", {class: "sort-icon", "aria-hidden": "true"}));
    headerCells[key] = h("th", {scope: "col", "aria-sort": "none"}, button);
    return headerCells[key];
  };
  const table = h("table", {id: "nodes-table", class: "nodes"},
    h("caption", {class: "visually-hidden"}, "Nodes of ", cluster, "; column headers sort"),
    h("thead", {}, h("tr", {},
      sortable("name", "Hostname"), sortable("addr", "Address"),
      h("th", {scope: "col"}, "Labels"),
      h("th", {scope: "col"}, h("span", {class: "visually-hidden"}, "Connect")))),
    tbody);
  main.append(
    h("div", {class: "page-head"},
      h("h1", {}, "Nodes"),
      h("div", {class: "search"},
        h("label", {for: "node-search"}, "Search nodes"),
        search,
        h("p", {id: "node-search-help", class: "help"},
          "Matches hostnames, addresses and labels; use k=v for a label; all terms must match."))),
    error, count, h("div", {class: "table-wrap"}, table));

  let nodes = [];
  let logins = [];
  const draw = () => {
    const terms = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = nodes.filter((n) => nodeMatches(n, terms));
    const keyOf = SORT_KEYS[sort.key];
    shown.sort((a, b) => keyOf(a).localeCompare(keyOf(b), undefined, {numeric: true}) * sort.dir ||
      a.name.localeCompare(b.name));
    for (const [key, th] of Object.entries(headerCells)) {
      th.setAttribute("aria-sort",
        key === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
    }
    tbody.replaceChildren(...shown.map((node) => nodeRow(cluster, node, logins)));
    if (!shown.length) {
      tbody.append(h("tr", {class: "empty"}, h("td", {colspan: "4"},
        nodes.length ? "No node matches the search." : "No nodes have joined this cluster yet.")));
    }
    count.textContent = terms.length ? `${shown.length} of ${nodes.length} nodes`
      : `${nodes.length} node${nodes.length === 1 ? "" : "s"}`;
  };
  search.addEventListener("input", draw);
  search.value = new URLSearchParams(location.search).get("search") || "";

  try {
    const [context, list] = await Promise.all([loadContext(cluster),
      api("GET", sitePath(cluster, "nodes"))]);
    drawNav(context);
    logins = context.logins || [];
    nodes = Array.isArray(list) ? list : [];
    draw();
  } catch (err) {
    if (isAuthError(err)) {
      toLogin();
      return;
    }
    showError(error, err.message);
  }
}

function nodeRow(cluster, node, logins) {
  const c = encodeURIComponent(cluster);
  const id = encodeURIComponent(node.id || node.name);
  const labels = Object.entries(node.labels || {}).sort(([a], [b]) => a.localeCompare(b));
  const connect = logins.length
    ? h("details", {class: "connect"},
      h("summary", {class: "btn btn-primary", "aria-label": `Connect to ${node.name}`}, "Connect"),
      h("ul", {class: "menu", "aria-label": `Logins for ${node.name}`}, logins.map((login) =>
        h("li", {}, h("a", {href: `/web/cluster/${c}/console/node/${id}/${encodeURIComponent(login)}`,
          target: "_blank", rel: "noopener", "data-login": login,
          "aria-label": `${login}@${node.name} (opens a new tab)`}, login)))))
    : h("span", {class: "muted"}, "no logins");
  return h("tr", {"data-node": node.name, "data-node-id": node.id || ""},
    h("td", {"data-label": "Hostname", class: "hostname"}, node.name),
    h("td", {"data-label": "Address", class: "addr"}, node.tunnel ? "⟵ Tunnel" : node.addr || ""),
    h("td", {"data-label": "Labels"}, labels.length
      ? h("ul", {class: "chips", "aria-label": "Labels"},
        labels.map(([k, v]) => h("li", {class: "chip"}, `${k}=${v}`)))
      : ""),
    h("td", {class: "actions"}, connect));
}

// Close an open Connect menu on Escape or when clicking elsewhere.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  const open = document.activeElement?.closest?.("details.connect[open]");
  if (open) {
    open.open = false;
    open.querySelector("summary").focus();
  }
});
document.addEventListener("click", (event) => {
  for (const details of document.querySelectorAll("details.connect[open]")) {
    if (!details.contains(event.target)) details.open = false;
  }
});

// ---------------------------------------------------------------------------------------------
// Not found

function notFound() {
  const {main} = layout(SHELL.cluster, "", "Not found");
  main.append(h("h1", {}, "Page not found"),
    h("p", {}, h("a", {href: "/web", "data-route": true}, "Go to the node list")));
}

// ---------------------------------------------------------------------------------------------
// Console: xterm.js over the proxy's websocket

async function consolePage({cluster, node, login, sid}) {
  setTitle(`${login}@${node}`);
  const target = h("span", {id: "status-target", class: "status-target"}, `${login}@${node}`);
  const sessionId = h("span", {id: "status-session", class: "status-session", hidden: true});
  const state = h("span", {id: "status-state", class: "status-state", role: "status",
    "aria-live": "polite"}, sid ? "joining…" : "connecting…");
  const container = h("div", {id: "terminal", class: "terminal", role: "region",
    "aria-label": `Terminal ${login}@${node}`});
  app.replaceChildren(
    h("main", {id: "main", class: "console"}, h("h1", {class: "visually-hidden"},
      `Terminal ${login}@${node}`), container),
    h("footer", {id: "status-bar", class: "status-bar", "aria-label": "Session status"},
      h("a", {href: `/web/cluster/${encodeURIComponent(cluster)}/nodes`, class: "status-home"},
        "Nodes"),
      target, sessionId, state));
  const setState = (text, kind = "") => {
    state.textContent = text;
    state.className = `status-state ${kind}`;
  };
  // The URL names the node by its UUID: show its hostname once the node list says it.
  let hostname = node;
  const showTarget = (who) => {
    target.textContent = `${who}@${hostname}`;
    setTitle(target.textContent);
    container.setAttribute("aria-label", `Terminal ${target.textContent}`);
  };
  api("GET", sitePath(cluster, "nodes")).then((nodes) => {
    const found = (Array.isArray(nodes) ? nodes : []).find((n) => n.id === node || n.name === node);
    if (found?.name) {
      hostname = found.name;
      showTarget(target.textContent.split("@")[0]);
    }
  }).catch(() => {});

  let xterm;
  try {
    xterm = await loadXterm();
  } catch (err) {
    setState(`cannot load the terminal: ${err.message}`, "bad");
    return;
  }
  const term = new xterm.Terminal({...TERMINAL_OPTIONS, cursorBlink: true, scrollback: 5000});
  const fit = new xterm.FitAddon();
  term.loadAddon(fit);
  // The canvas renderer, loaded before open(): the default DOM renderer writes <style> elements
  // and style attributes, which the shell's CSP (style-src 'self') refuses.
  term.loadAddon(new xterm.CanvasAddon());
  term.open(container);
  container.xterm = term; // read-only hook for browser tests: the terminal's buffer
  fit.fit();
  term.focus();

  // Ctrl+Shift+C copies the selection; Ctrl+Shift+V is left to the browser's paste.
  term.attachCustomKeyEventHandler((event) => {
    if (event.type === "keydown" && event.ctrlKey && event.shiftKey) {
      if (event.code === "KeyC") {
        const text = term.getSelection();
        if (text) navigator.clipboard?.writeText(text).catch(() => {});
        event.preventDefault();
        return false;
      }
      if (event.code === "KeyV") return false;
    }
    return true;
  });

  // A join sends the login of its URL too: the proxy logs in to the node as it to join.
  const params = new URLSearchParams({node, login});
  if (sid) params.set("sid", sid);
  params.set("cols", String(term.cols));
  params.set("rows", String(term.rows));
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}${sitePath(cluster, "connect")}?${params}`);
  ws.binaryType = "arraybuffer";

  const encoder = new TextEncoder();
  const decoder = new TextDecoder("utf-8");
  let exitStatus = null;
  let serverError = "";

  // Output: one xterm.write at a time; what arrives meanwhile is joined into the next write,
  // so the terminal parser paces the page instead of an ever-growing chain of callbacks.
  const pending = [];
  let writing = false;
  const pump = () => {
    if (writing || !pending.length) return;
    writing = true;
    const chunk = pending.join("");
    pending.length = 0;
    term.write(chunk, () => {
      writing = false;
      pump();
    });
  };

  const send = (data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(data);
  };
  ws.addEventListener("open", () => {
    send(JSON.stringify({token: SHELL.bearer}));
    setState("connected", "ok");
  });
  ws.addEventListener("message", (event) => {
    if (typeof event.data !== "string") {
      const text = decoder.decode(new Uint8Array(event.data), {stream: true});
      if (text) {
        pending.push(text);
        pump();
      }
      return;
    }
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === "session") {
      // A new session has no id yet (the server sends ""): nothing to show then.
      sessionId.textContent = msg.sid ? `session ${msg.sid}` : "";
      sessionId.hidden = !msg.sid;
      sessionId.dataset.sid = msg.sid || "";
      showTarget(msg.login || login);
    } else if (msg.type === "exit") {
      exitStatus = Number(msg.status);
    } else if (msg.type === "error") {
      serverError = String(msg.message || "error");
      setState(serverError, "bad");
    }
  });
  ws.addEventListener("close", (event) => {
    const tail = decoder.decode();
    if (tail) {
      pending.push(tail);
      pump();
    }
    term.options.disableStdin = true;
    term.options.cursorBlink = false;
    if (exitStatus !== null) setState(`session ended (exit status ${exitStatus})`, "done");
    else if (serverError) setState(serverError, "bad");
    else if (event.code === 4401) setState("not authenticated: log in again", "bad");
    else setState("connection lost", "bad");
  });

  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (ch) => ch.charCodeAt(0) & 0xff)));
  term.onResize(({cols, rows}) => send(JSON.stringify({type: "resize", cols, rows})));

  let resizeTimer = null;
  const refit = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => fit.fit(), RESIZE_DEBOUNCE_MS);
  };
  window.addEventListener("resize", refit);
  const observer = new ResizeObserver(refit);
  observer.observe(container);
  onLeave(() => {
    window.removeEventListener("resize", refit);
    observer.disconnect();
    ws.close(1000);
    term.dispose();
  });
}

route();
