// Active sessions (join a live session) and recordings (open the player).
"use strict";

import {
  h, api, sitePath, framedPage, errorBox, showError, statusLine, timeEl, formatDuration,
  isAuthError, toLogin, onLeave, dataTable, emptyRow, cell,
} from "./core.js";

const REFRESH_MS = 5000; // live sessions come and go: the list follows them

// ---------------------------------------------------------------------------------------------
// Active sessions

export async function activeSessionsPage(cluster) {
  const error = errorBox("sessions-error");
  const page = await framedPage(cluster, "sessions", "Active sessions", error);
  if (!page) return;
  const count = statusLine("sessions-count");
  const columns = ["User", "Login", "Node", "Started", "Parties", ""];
  const {tbody, wrap} = dataTable("sessions-table", "Active sessions you may join", columns);
  page.main.append(
    h("div", {class: "page-head"}, h("h1", {}, "Active sessions")),
    error, count, wrap);
  const c = encodeURIComponent(cluster);

  let shown = "";
  const load = async () => {
    let list;
    try {
      list = await api("GET", sitePath(cluster, "active_sessions"));
    } catch (err) {
      if (isAuthError(err)) return toLogin();
      return showError(error, err.message);
    }
    showError(error, "");
    list = Array.isArray(list) ? list : [];
    list.sort((a, b) => String(b.created).localeCompare(String(a.created)));
    // Redraw only on a change, so a refresh never takes the keyboard focus off a Join link.
    const fingerprint = JSON.stringify(list);
    if (fingerprint === shown) return;
    shown = fingerprint;
    tbody.replaceChildren(...list.map((s) => {
      const href = `/web/cluster/${c}/node/${encodeURIComponent(s.server_id)}/` +
        `${encodeURIComponent(s.login)}/${encodeURIComponent(s.sid)}`;
      return h("tr", {"data-sid": s.sid},
        cell("User", s.user),
        cell("Login", s.login),
        cell("Node", h("span", {class: "hostname"}, s.server_hostname || s.server_id)),
        cell("Started", timeEl(s.created)),
        cell("Parties", (s.parties || []).length
          ? h("ul", {class: "chips", "aria-label": "Parties"},
            s.parties.map((p) => h("li", {class: "chip"}, p)))
          : h("span", {class: "muted"}, "none")),
        h("td", {class: "actions"}, s.server_id
          ? h("a", {href, class: "btn btn-primary join", target: "_blank", rel: "noopener",
            "data-sid": s.sid,
            "aria-label": `Join ${s.user}'s session on ${s.server_hostname} (opens a new tab)`},
          "Join")
          : h("span", {class: "muted"}, "cannot join")));
    }));
    if (!list.length) tbody.append(emptyRow(columns.length, "No live sessions right now."));
    count.textContent = `${list.length} live session${list.length === 1 ? "" : "s"}`;
  };
  await load();
  const timer = setInterval(load, REFRESH_MS);
  onLeave(() => clearInterval(timer));
}

// ---------------------------------------------------------------------------------------------
// Recordings

export async function recordingsPage(cluster) {
  const error = errorBox("recordings-error");
  const page = await framedPage(cluster, "recordings", "Recordings", error);
  if (!page) return;
  const count = statusLine("recordings-count");
  const columns = ["User", "Login", "Node", "Started", "Duration", ""];
  const {tbody, wrap} = dataTable("recordings-table", "Recorded sessions, newest first",
    columns);
  page.main.append(h("div", {class: "page-head"}, h("h1", {}, "Recordings")), error, count, wrap);
  const c = encodeURIComponent(cluster);
  let list;
  try {
    list = await api("GET", sitePath(cluster, "sessions"));
  } catch (err) {
    if (isAuthError(err)) return toLogin();
    return showError(error, err.message);
  }
  list = Array.isArray(list) ? list : [];
  list.sort((a, b) => String(b.start).localeCompare(String(a.start)));
  tbody.replaceChildren(...list.map((r) => h("tr", {"data-sid": r.sid},
    cell("User", r.user),
    cell("Login", r.login),
    cell("Node", h("span", {class: "hostname"}, r.server_hostname || r.server_id)),
    cell("Started", timeEl(r.start)),
    cell("Duration", formatDuration(r.duration_ms),
      r.complete ? "" : h("span", {class: "badge"}, "in progress")),
    h("td", {class: "actions"},
      h("a", {href: `/web/cluster/${c}/session/${encodeURIComponent(r.sid)}`, "data-route": true,
        class: "btn btn-primary play", "data-sid": r.sid,
        "aria-label": `Play ${r.user}'s session on ${r.server_hostname || r.server_id}`},
      "Play")))));
  if (!list.length) tbody.append(emptyRow(columns.length, "No recorded sessions yet."));
  count.textContent = `${list.length} recording${list.length === 1 ? "" : "s"}`;
}
