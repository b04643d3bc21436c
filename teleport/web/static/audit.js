// The audit log: a time range, event types and free text, searched by the auth server, paged
// newest first by the key it hands back; each event's JSON one click away.
"use strict";

import {
  h, api, sitePath, framedPage, errorBox, showError, statusLine, timeEl, toLogin,
  dataTable, emptyRow, cell,
} from "./core.js";

const PAGE_SIZE = 50;
const DAY_MS = 24 * 3600 * 1000;
/** Offered in the type field; any other type can still be typed. */
const KNOWN_TYPES = [
  "session.start", "session.end", "session.join", "session.leave", "user.login", "exec", "scp",
  "resize", "port", "auth", "join", "user.create", "user.update", "user.delete",
  "join_token.create", "join_token.delete", "reset_password_token.create",
  "reset_password_token.delete", "client.disconnect", "subsystem", "sftp", "sftp_summary",
];
/** The fields a row shows after its type and user; all of them are in the JSON. */
const SUMMARY_FIELDS = ["login", "server_hostname", "addr.remote", "remote_addr", "name",
  "roles", "method", "command", "path", "error", "reason", "sid"];

/** A Date as the value of an <input type="datetime-local"> (local time, to the minute). */
function toLocalInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function fromLocalInput(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function summary(event) {
  const parts = [];
  for (const key of SUMMARY_FIELDS) {
    let value = event[key];
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value = value.join(",");
    else if (typeof value === "object") continue;
    parts.push(`${key}=${value}`);
    if (parts.length >= 4) break;
  }
  if (event.success === false) parts.unshift("failed");
  return parts.join("  ");
}

export async function auditPage(cluster) {
  const error = errorBox("audit-error");
  const page = await framedPage(cluster, "audit", "Audit log", error);
  if (!page) return;

  const query = new URLSearchParams(location.search);
  const now = new Date();
  const fromInput = h("input", {id: "audit-from", name: "from", type: "datetime-local"});
  const toInput = h("input", {id: "audit-to", name: "to", type: "datetime-local"});
  fromInput.value = toLocalInput(query.get("from") ? new Date(query.get("from"))
    : new Date(now.getTime() - DAY_MS));
  toInput.value = query.get("to") ? toLocalInput(new Date(query.get("to"))) : "";
  const typeInput = h("input", {id: "audit-type", name: "type", list: "audit-types",
    autocomplete: "off", spellcheck: "false", placeholder: "all events",
    "aria-describedby": "audit-type-help"});
  typeInput.value = query.get("type") || "";
  const searchInput = h("input", {id: "audit-search", name: "q", type: "search",
    autocomplete: "off", placeholder: "user, node, address…"});
  searchInput.value = query.get("q") || "";
  const form = h("form", {id: "audit-form", class: "filters", role: "search",
    "aria-label": "Filter the audit log"},
  h("div", {class: "field"}, h("label", {for: "audit-from"}, "From"), fromInput),
  h("div", {class: "field"}, h("label", {for: "audit-to"}, "To"), toInput,
    h("p", {class: "help"}, "Empty: now.")),
  h("div", {class: "field"}, h("label", {for: "audit-type"}, "Event types"), typeInput,
    h("datalist", {id: "audit-types"}, KNOWN_TYPES.map((t) => h("option", {value: t}))),
    h("p", {id: "audit-type-help", class: "help"}, "Comma-separated, e.g. session.start,exec")),
  h("div", {class: "field field-grow"}, h("label", {for: "audit-search"}, "Search"),
    searchInput),
  h("div", {class: "field field-submit"},
    h("button", {type: "submit", id: "audit-submit", class: "btn btn-primary"}, "Search")));

  const count = statusLine("audit-count");
  const columns = ["Time", "Event", "User", "Details", ""];
  const {tbody, wrap} = dataTable("audit-table", "Audit events, newest first", columns);
  const prev = h("button", {type: "button", id: "audit-prev", class: "btn btn-secondary",
    disabled: true}, "← Newer");
  const nextButton = h("button", {type: "button", id: "audit-next", class: "btn btn-secondary",
    disabled: true}, "Older →");
  const pageLabel = h("span", {id: "audit-page", class: "muted"});
  page.main.append(
    h("div", {class: "page-head"}, h("h1", {}, "Audit log")),
    form, error, count, wrap,
    h("nav", {class: "pager", "aria-label": "Audit log pages"}, prev, pageLabel, nextButton));

  // keys[i] is the start_key of page i (the first page has none).
  let keys = [""];
  let index = 0;
  let filters = null;

  const readFilters = () => {
    const from = fromLocalInput(fromInput.value);
    const to = toInput.value ? fromLocalInput(toInput.value) : null;
    if (!from) throw new Error("enter the start of the time range");
    if (toInput.value && !to) throw new Error("the end of the time range is not a date");
    if (to && to <= from) throw new Error("the end of the time range must be after its start");
    const types = typeInput.value.split(",").map((t) => t.trim()).filter(Boolean);
    return {from: from.toISOString(), to: (to || new Date()).toISOString(), toSet: Boolean(to),
      type: types.join(","), q: searchInput.value.trim()};
  };

  const load = async () => {
    const params = new URLSearchParams({from: filters.from, to: filters.to,
      limit: String(PAGE_SIZE)});
    if (filters.type) params.set("type", filters.type);
    if (filters.q) params.set("q", filters.q);
    if (keys[index]) params.set("start_key", keys[index]);
    prev.disabled = true;
    nextButton.disabled = true;
    count.textContent = "searching…";
    let answer;
    try {
      answer = await api("GET", `${sitePath(cluster, "events/search")}?${params}`);
    } catch (err) {
      count.textContent = "";
      // 403 here is the auth server refusing a non-admin: the page says so (the context loaded).
      if (err.status === 401) return toLogin();
      return showError(error, err.status === 403
        ? `The audit log is for cluster administrators (role admin): ${err.message}`
        : err.message);
    }
    showError(error, "");
    const events = Array.isArray(answer?.events) ? answer.events : [];
    keys = keys.slice(0, index + 1);
    if (answer?.next_key) keys.push(answer.next_key);
    tbody.replaceChildren();
    events.forEach((event, i) => tbody.append(...eventRows(event, `${index}-${i}`)));
    if (!events.length) tbody.append(emptyRow(columns.length, "No events match."));
    const first = index * PAGE_SIZE + 1;
    count.textContent = events.length
      ? `events ${first}–${first + events.length - 1}${answer?.next_key ? ", more older" : ""}`
      : "no events";
    pageLabel.textContent = `Page ${index + 1}`;
    prev.disabled = index === 0;
    nextButton.disabled = keys.length <= index + 1;
  };

  const search = async () => {
    try {
      filters = readFilters();
    } catch (err) {
      showError(error, err.message);
      return;
    }
    const shown = new URLSearchParams({from: filters.from});
    if (filters.toSet) shown.set("to", filters.to);
    if (filters.type) shown.set("type", filters.type);
    if (filters.q) shown.set("q", filters.q);
    history.replaceState(null, "", `${location.pathname}?${shown}`);
    keys = [""];
    index = 0;
    await load();
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  prev.addEventListener("click", () => {
    index = Math.max(0, index - 1);
    load();
  });
  nextButton.addEventListener("click", () => {
    index += 1;
    load();
  });
  await search();
}

/** An event's row and its hidden JSON row, toggled by the row's button. */
function eventRows(event, key) {
  const jsonId = `audit-json-${key}`;
  const json = h("tr", {class: "event-json", id: jsonId, hidden: true},
    h("td", {colspan: "5"}, h("pre", {class: "json", tabindex: "0",
      "aria-label": `JSON of the ${event.event} event`}, JSON.stringify(event, null, 2))));
  const toggle = h("button", {type: "button", class: "btn btn-secondary btn-small json-toggle",
    "aria-expanded": "false", "aria-controls": jsonId,
    "aria-label": `JSON of the ${event.event} event at ${event.time}`},
  "JSON");
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    json.hidden = !open;
  });
  const row = h("tr", {class: "event", "data-event": event.event},
    cell("Time", timeEl(event.time)),
    cell("Event", h("code", {class: "event-type"}, event.event)),
    cell("User", event.user || h("span", {class: "muted"}, "—")),
    cell("Details", h("span", {class: "summary mono"}, summary(event))),
    h("td", {class: "actions"}, toggle));
  return [row, json];
}
