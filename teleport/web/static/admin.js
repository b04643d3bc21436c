// The admin pages: users, join tokens and the cluster's status. The proxy calls the auth server
// with the user's own certificate, so the auth server refuses non-admins (403, shown here).
"use strict";

import {
  h, api, sitePath, framedPage, errorBox, showError, statusLine, timeEl, toLogin, dataTable,
  emptyRow, cell, copyField, confirmAction,
} from "./core.js";

const splitList = (text) => String(text).split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);

function chips(label, items) {
  return items?.length
    ? h("ul", {class: "chips", "aria-label": label}, items.map((i) => h("li", {class: "chip"}, i)))
    : h("span", {class: "muted"}, "none");
}

/** Shows an API failure; a 401 (session gone) goes to log in. */
function failed(error, err) {
  if (err.status === 401) toLogin();
  else showError(error, err.message);
}

/** A page only for admins: null (the page saying so) when the context says the user is not. */
async function adminPage(cluster, current, title, error) {
  const page = await framedPage(cluster, current, title, error);
  if (page && page.context && !page.context.admin) {
    page.main.append(h("div", {class: "page-head"}, h("h1", {}, title)), error);
    showError(error, "This page is for cluster administrators: your roles do not allow it.");
    return null;
  }
  return page;
}

// ---------------------------------------------------------------------------------------------
// Users

export async function usersPage(cluster) {
  const error = errorBox("users-error");
  const page = await adminPage(cluster, "users", "Users", error);
  if (!page) return;
  const count = statusLine("users-count");
  const columns = ["User", "Roles", "Logins", "Status", "Created", ""];
  const {tbody, wrap} = dataTable("users-table", "Users of the cluster", columns);

  const name = h("input", {id: "invite-name", name: "name", required: true, autocomplete: "off",
    autocapitalize: "none", spellcheck: "false"});
  const logins = h("input", {id: "invite-logins", name: "logins", autocomplete: "off",
    autocapitalize: "none", spellcheck: "false", "aria-describedby": "invite-logins-help"});
  const roles = h("input", {id: "invite-roles", name: "roles", autocomplete: "off",
    autocapitalize: "none", spellcheck: "false", "aria-describedby": "invite-roles-help"});
  roles.value = "access";  // the preset for a user who logs in to nodes, nothing more
  const inviteError = errorBox("invite-error");
  const result = h("div", {id: "invite-result", class: "result", hidden: true});
  const form = h("form", {id: "invite-form", class: "card card-wide", novalidate: true,
    "aria-labelledby": "invite-title"},
  h("h2", {id: "invite-title"}, "Invite a user"),
  h("div", {class: "form-grid"},
    h("div", {class: "field"}, h("label", {for: "invite-name"}, "Username"), name),
    h("div", {class: "field"}, h("label", {for: "invite-logins"}, "Logins"), logins,
      h("p", {id: "invite-logins-help", class: "help"},
        "OS logins, comma-separated; empty: the username")),
    h("div", {class: "field"}, h("label", {for: "invite-roles"}, "Roles"), roles,
      h("p", {id: "invite-roles-help", class: "help"},
        "Comma-separated: access, editor, auditor, admin or your own"))),
  inviteError,
  h("button", {type: "submit", id: "invite-submit", class: "btn btn-primary"}, "Create invite"),
  result);

  page.main.append(h("div", {class: "page-head"}, h("h1", {}, "Users")), error, count, wrap, form);

  /** Shows a reset link where the invite's link appears. */
  const showReset = (answer) => {
    result.replaceChildren(
      h("p", {}, "Send this reset link to ", h("strong", {}, answer.name),
        "; their password and second factor no longer work. It expires ",
        timeEl(answer.expires), "."),
      copyField("invite-url", "Reset link", answer.signup_url));
    result.hidden = false;
    form.querySelector("#invite-url").focus();
  };

  /** Redraws the list; `note` (what was just done) replaces the count in the status line. */
  const load = async (note = "") => {
    let list;
    try {
      list = await api("GET", "/webapi/users");
    } catch (err) {
      return failed(error, err);
    }
    list = Array.isArray(list) ? list : [];
    list.sort((a, b) => a.name.localeCompare(b.name));
    tbody.replaceChildren(...list.map((user) => userRow(user, error, load, showReset)));
    if (!list.length) tbody.append(emptyRow(columns.length, "No users yet."));
    count.textContent = note || `${list.length} user${list.length === 1 ? "" : "s"}`;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = name.value.trim();
    if (!user) {
      showError(inviteError, "enter a username");
      name.focus();
      return;
    }
    showError(inviteError, "");
    const submit = form.querySelector("#invite-submit");
    submit.disabled = true;
    try {
      const answer = await api("POST", "/webapi/users", {name: user,
        logins: splitList(logins.value).length ? splitList(logins.value) : [user],
        roles: splitList(roles.value)});
      result.replaceChildren(
        h("p", {}, "Send this signup link to ", h("strong", {}, answer.name), "; it expires ",
          timeEl(answer.expires), "."),
        copyField("invite-url", "Signup link", answer.signup_url));
      result.hidden = false;
      form.querySelector("#invite-url").focus();
      name.value = "";
      logins.value = "";
      await load(`${answer.name} invited`);
    } catch (err) {
      if (err.status === 401) toLogin();
      else showError(inviteError, err.message);
    } finally {
      submit.disabled = false;
    }
  });
  await load();
}

function userRow(user, error, reload, showReset) {
  const actions = h("td", {class: "actions"});
  if (user.locked) {
    actions.append(h("button", {type: "button", class: "btn btn-secondary btn-small unlock",
      "data-user": user.name, "aria-label": `Unlock ${user.name}`, onclick: async () => {
        try {
          await api("POST", `/webapi/users/${encodeURIComponent(user.name)}/unlock`, {});
          await reload(`${user.name} unlocked`);
        } catch (err) {
          failed(error, err);
        }
      }}, "Unlock"));
  }
  actions.append(h("button", {type: "button", class: "btn btn-secondary btn-small reset",
    "data-user": user.name, "aria-label": `Reset ${user.name}`, onclick: async () => {
      if (!await confirmAction(`Reset ${user.name}? Their password and second factor stop ` +
        "working now; a link lets them choose new ones.", "Reset")) return;
      try {
        showReset(await api("POST", `/webapi/users/${encodeURIComponent(user.name)}/reset`, {}));
        await reload(`${user.name} reset`);
      } catch (err) {
        failed(error, err);
      }
    }}, "Reset"));
  actions.append(h("button", {type: "button", class: "btn btn-danger btn-small delete",
    "data-user": user.name, "aria-label": `Delete ${user.name}`, onclick: async () => {
      if (!await confirmAction(`Delete the user ${user.name}? Their sessions end now.`,
        "Delete")) return;
      try {
        await api("DELETE", `/webapi/users/${encodeURIComponent(user.name)}`, {});
        await reload(`${user.name} deleted`);
      } catch (err) {
        failed(error, err);
      }
    }}, "Delete"));
  return h("tr", {"data-user": user.name},
    cell("User", h("span", {class: "hostname"}, user.name)),
    cell("Roles", chips("Roles", user.roles)),
    cell("Logins", chips("Logins", user.logins)),
    cell("Status", user.locked
      ? h("span", {class: "badge badge-bad", title: user.locked_message || ""}, "locked",
        user.locked_message ? h("span", {class: "visually-hidden"}, `: ${user.locked_message}`)
          : "")
      : h("span", {class: "badge badge-ok"}, "active")),
    cell("Created", timeEl(user.created)),
    actions);
}

// ---------------------------------------------------------------------------------------------
// Join tokens

export async function tokensPage(cluster) {
  const error = errorBox("tokens-error");
  const page = await adminPage(cluster, "tokens", "Join tokens", error);
  if (!page) return;
  const count = statusLine("tokens-count");
  const columns = ["Token", "Roles", "Expires", ""];
  const {tbody, wrap} = dataTable("tokens-table", "Join tokens", columns);

  const roleBox = (role, checked) => h("label", {class: "check"},
    h("input", {type: "checkbox", id: `token-role-${role}`, name: "roles", value: role, checked}),
    role);
  const ttl = h("input", {id: "token-ttl", name: "ttl", autocomplete: "off", spellcheck: "false",
    "aria-describedby": "token-ttl-help"});
  ttl.value = "30m";
  const createError = errorBox("token-create-error");
  const result = h("div", {id: "token-result", class: "result", hidden: true});
  const form = h("form", {id: "token-form", class: "card card-wide", novalidate: true,
    "aria-labelledby": "token-title"},
  h("h2", {id: "token-title"}, "Create a join token"),
  h("div", {class: "form-grid"},
    h("fieldset", {class: "field"}, h("legend", {}, "For"),
      h("div", {class: "checks"}, roleBox("node", true), roleBox("proxy", false))),
    h("div", {class: "field"}, h("label", {for: "token-ttl"}, "Valid for"), ttl,
      h("p", {id: "token-ttl-help", class: "help"}, "A duration: 30m, 4h, 1h30m"))),
  createError,
  h("button", {type: "submit", id: "token-submit", class: "btn btn-primary"}, "Create token"),
  result);
  page.main.append(h("div", {class: "page-head"}, h("h1", {}, "Join tokens")),
    error, count, wrap, form);

  const load = async (note = "") => {
    let list;
    try {
      list = await api("GET", "/webapi/tokens");
    } catch (err) {
      return failed(error, err);
    }
    list = Array.isArray(list) ? list : [];
    list.sort((a, b) => String(a.expires).localeCompare(String(b.expires)));
    tbody.replaceChildren(...list.map((t) => h("tr", {"data-token": t.token},
      cell("Token", h("code", {class: "token mono"}, t.token)),
      cell("Roles", chips("Roles", t.roles)),
      cell("Expires", t.expires ? timeEl(t.expires) : "never (static, in teleport.yaml)"),
      // Static tokens live in the config file: the server refuses to delete them.
      h("td", {class: "actions"}, !t.expires ? "" : h("button", {type: "button",
        class: "btn btn-danger btn-small revoke", "data-token": t.token,
        "aria-label": `Revoke the ${(t.roles || []).join(" and ")} token ${t.token.slice(0, 8)}…`,
        onclick: async () => {
          if (!await confirmAction("Revoke this join token? Hosts that have not joined with " +
            "it yet cannot use it any more.", "Revoke")) return;
          try {
            await api("DELETE", `/webapi/tokens/${encodeURIComponent(t.token)}`, {});
            await load("token revoked");
          } catch (err) {
            failed(error, err);
          }
        }}, "Revoke")))));
    if (!list.length) tbody.append(emptyRow(columns.length, "No join tokens."));
    count.textContent = note || `${list.length} token${list.length === 1 ? "" : "s"}`;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = [...form.querySelectorAll("input[name=roles]:checked")].map((i) => i.value);
    if (!chosen.length) {
      showError(createError, "choose node, proxy or both");
      return;
    }
    if (!ttl.value.trim()) {
      showError(createError, "enter how long the token is valid, e.g. 30m");
      ttl.focus();
      return;
    }
    showError(createError, "");
    const submit = form.querySelector("#token-submit");
    submit.disabled = true;
    try {
      const t = await api("POST", "/webapi/tokens", {roles: chosen, ttl: ttl.value.trim()});
      const command = `teleport start \\\n   --roles=${t.roles.join(",")} \\\n` +
        `   --token=${t.token} \\\n   --ca-pin=${t.ca_pin} \\\n   --auth-server=${t.auth_server}`;
      result.replaceChildren(
        h("p", {}, "The token expires ", timeEl(t.expires), "."),
        copyField("token-value", "Token", t.token),
        copyField("token-ca-pin", "CA pin", t.ca_pin),
        copyField("token-command", "Run this on the new host", command, {multiline: true}));
      result.hidden = false;
      form.querySelector("#token-value").focus();
      await load("token created");
    } catch (err) {
      if (err.status === 401) toLogin();
      else showError(createError, err.message);
    } finally {
      submit.disabled = false;
    }
  });
  await load();
}

// ---------------------------------------------------------------------------------------------
// Cluster status

export async function statusPage(cluster) {
  const error = errorBox("status-error");
  const page = await adminPage(cluster, "status", "Cluster status", error);
  if (!page) return;
  const body = h("div", {id: "status-body"});
  page.main.append(h("div", {class: "page-head"}, h("h1", {}, "Cluster status")), error, body);
  let status;
  try {
    status = await api("GET", sitePath(cluster, "status"));
  } catch (err) {
    return failed(error, err);
  }
  const servers = (id, caption, columns, rows) => {
    const {tbody, wrap} = dataTable(id, caption, columns.map(([label]) => label));
    tbody.replaceChildren(...rows.map((row) => h("tr", {},
      columns.map(([label, key]) => cell(label, key === "hostname"
        ? h("span", {class: "hostname"}, row[key] || "")
        : h("span", {class: "mono"}, row[key] || ""))))));
    if (!rows.length) tbody.append(emptyRow(columns.length, "none"));
    return wrap;
  };
  body.replaceChildren(
    h("dl", {id: "status-summary", class: "meta meta-wide"},
      h("div", {}, h("dt", {}, "Cluster"), h("dd", {id: "status-cluster"}, status.cluster)),
      h("div", {}, h("dt", {}, "Version"), h("dd", {id: "status-version"}, status.version)),
      h("div", {}, h("dt", {}, "Nodes online"),
        h("dd", {id: "status-nodes"}, String(status.nodes_online ?? 0)))),
    copyField("status-ca-pin", "CA pin", status.ca_pin || ""),
    h("h2", {}, "Auth servers"),
    servers("status-auth", "Auth servers", [["Hostname", "hostname"], ["Address", "addr"],
      ["ID", "id"]], status.auth_servers || []),
    h("h2", {}, "Proxies"),
    servers("status-proxies", "Proxies", [["Hostname", "hostname"],
      ["Public address", "public_addr"], ["Address", "addr"], ["ID", "id"]],
    status.proxies || []));
}
