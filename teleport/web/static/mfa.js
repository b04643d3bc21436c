// Security keys (WebAuthn) in the web UI: the login page's key and passkey steps, and the
// account page listing the user's MFA devices with Add and Remove.
//
// The server sends WebAuthn options as JSON with base64url binary fields and takes the
// browser's answers in the same form (what PublicKeyCredential.toJSON() gives); the
// conversions are done here so that browsers without the JSON helpers work too.
"use strict";

import {
  SHELL, h, api, framedPage, errorBox, showError, statusLine, timeEl, toLogin, dataTable,
  emptyRow, cell, confirmAction,
} from "./core.js";

const b64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const unb64u = (text) => Uint8Array.from(
  atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4)),
  (c) => c.charCodeAt(0));
const ids = (list) => (list || []).map((c) => ({...c, id: unb64u(c.id)}));

/** navigator.credentials.create() with the server's options; the answer as JSON. */
export async function createCredential(options) {
  const cred = await navigator.credentials.create({publicKey: {...options,
    challenge: unb64u(options.challenge), user: {...options.user, id: unb64u(options.user.id)},
    excludeCredentials: ids(options.excludeCredentials)}});
  const r = cred.response;
  return {id: cred.id, rawId: b64u(cred.rawId), type: cred.type,
    clientExtensionResults: cred.getClientExtensionResults(),
    response: {clientDataJSON: b64u(r.clientDataJSON), attestationObject: b64u(r.attestationObject),
      transports: r.getTransports ? r.getTransports() : []}};
}

/** navigator.credentials.get() with the server's options; the assertion as JSON. */
export async function getAssertion(options) {
  const cred = await navigator.credentials.get({publicKey: {...options,
    challenge: unb64u(options.challenge), allowCredentials: ids(options.allowCredentials)}});
  const r = cred.response;
  return {id: cred.id, rawId: b64u(cred.rawId), type: cred.type,
    clientExtensionResults: cred.getClientExtensionResults(),
    response: {clientDataJSON: b64u(r.clientDataJSON), authenticatorData: b64u(r.authenticatorData),
      signature: b64u(r.signature), userHandle: r.userHandle ? b64u(r.userHandle) : null}};
}

/** The browser's refusal (no key touched, wrong key, cancelled) in words for the page. */
function keyError(err) {
  if (err?.name === "NotAllowedError") return "the security key did not answer (cancelled or timed out)";
  if (err?.name === "InvalidStateError") return "this security key is already registered";
  return String(err?.message || err);
}

// ---------------------------------------------------------------------------------------------
// Login page

/**
 * Adapts the login form to the cluster's second factor (from the ping): no code field when
 * keys are required, an optional one when either works, and a passkey button.
 * `done` leaves for the page the user came for.
 */
export async function setupLogin(form, error, done) {
  let ping;
  try {
    ping = await api("GET", "/webapi/ping");
  } catch {
    return;
  }
  const auth = ping.auth || {};
  const keys = Boolean(auth.webauthn && auth.webauthn.rp_id);
  const otp = document.getElementById("login-otp");
  const help = document.getElementById("login-otp-help");
  const field = otp?.closest(".field");
  if (auth.second_factor === "off" || (keys && auth.second_factor === "webauthn")) {
    form.dataset.otp = auth.second_factor === "off" ? "off" : "none";
    if (field) field.hidden = true;
    if (otp) otp.required = false;
  } else if (keys && (auth.second_factor === "on" || auth.second_factor === "optional")) {
    form.dataset.otp = "optional";
    if (otp) otp.required = false;
    if (help) help.textContent = "The 6-digit code from your authenticator app, or leave it " +
      "empty to use your security key.";
  } else if (auth.second_factor === "optional") {
    form.dataset.otp = "off"; // no keys here: a code if the user has an app, else none
    if (otp) otp.required = false;
  }
  if (keys && auth.allow_passwordless) {
    const button = h("button", {type: "button", id: "login-passkey", class: "btn btn-secondary"},
      "Sign in with a passkey");
    button.addEventListener("click", async () => {
      showError(error, "");
      button.disabled = true;
      try {
        await passkeyLogin();
        done();
      } catch (err) {
        showError(error, keyError(err));
        button.disabled = false;
      }
    });
    form.querySelector("#login-submit")?.after(h("div", {class: "passkey"}, button));
  }
}

/** The key step after the password: a challenge for the user's keys, answered by one. */
export async function keyLogin(user, password) {
  const begun = await api("POST", "/webapi/mfa/login/begin", {user, pass: password});
  if (!begun.webauthn_public_key) {
    // `optional` and no key registered: the password alone logs in.
    await api("POST", "/webapi/sessions/web", {user, pass: password, second_factor_token: ""});
    return;
  }
  let assertion;
  try {
    assertion = await getAssertion(begun.webauthn_public_key);
  } catch (err) {
    throw new Error(keyError(err));
  }
  await api("POST", "/webapi/mfa/login/finishsession",
    {user, webauthn_challenge_response: assertion});
}

async function passkeyLogin() {
  const begun = await api("POST", "/webapi/mfa/login/begin", {passwordless: true});
  const assertion = await getAssertion(begun.webauthn_public_key);
  await api("POST", "/webapi/mfa/login/finishsession", {webauthn_challenge_response: assertion});
}

// ---------------------------------------------------------------------------------------------
// Account page: the user's MFA devices

export async function accountPage() {
  const error = errorBox("account-error");
  const page = await framedPage(SHELL.cluster, "account", "Account", error);
  if (!page) return;
  const {main} = page;
  const status = statusLine("devices-status");
  const columns = ["Name", "Type", "Added", "Last used", ""];
  const {tbody, wrap} = dataTable("devices-table", "Your multi-factor devices", columns);

  const name = h("input", {id: "device-name", name: "name", required: true, maxlength: "64",
    autocomplete: "off", spellcheck: "false"});
  name.value = "security-key";
  const passkey = h("input", {id: "device-passkey", name: "passkey", type: "checkbox"});
  const passkeyField = h("div", {class: "field checkbox", hidden: true},
    passkey, h("label", {for: "device-passkey"}, "Passkey: log in with this key alone"));
  const addError = errorBox("device-add-error");
  const form = h("form", {id: "device-add-form", class: "card card-wide", novalidate: true,
    "aria-labelledby": "device-add-title"},
  h("h2", {id: "device-add-title"}, "Add a security key"),
  h("div", {class: "field"}, h("label", {for: "device-name"}, "Key name"), name),
  passkeyField, addError,
  h("button", {type: "submit", id: "device-add", class: "btn btn-primary"}, "Add key"));

  main.append(h("div", {class: "page-head"}, h("h1", {}, "Account")),
    h("p", {}, "Logged in as ", h("strong", {id: "account-user"}, SHELL.user)),
    error, h("h2", {id: "devices-title"}, "Multi-factor devices"), status, wrap, form);

  const failed = (box, err) => {
    if (err.status === 401) toLogin();
    else showError(box, err.message);
  };

  const draw = async () => {
    let list;
    try {
      list = await api("GET", "/webapi/mfa/devices");
    } catch (err) {
      failed(error, err);
      return;
    }
    const devices = list.devices || [];
    tbody.replaceChildren(...devices.map((d) => h("tr", {"data-device": d.name},
      cell("Name", d.name),
      cell("Type", d.passwordless ? `${d.type} (passkey)` : d.type),
      cell("Added", timeEl(d.added_at)),
      cell("Last used", timeEl(d.last_used)),
      h("td", {class: "actions"}, h("button", {type: "button", class: "btn btn-danger",
        "data-remove": d.name, "aria-label": `Remove ${d.name}`,
        onclick: () => remove(d.name)}, "Remove")))));
    if (!devices.length) {
      tbody.append(emptyRow(columns.length, list.otp
        ? "No security keys: you log in with an authenticator app."
        : "No security keys registered."));
    }
    status.textContent = `${devices.length} device${devices.length === 1 ? "" : "s"}` +
      (list.otp ? ", and an authenticator app" : "");
  };

  const remove = async (device) => {
    if (!await confirmAction(`Remove the device ${device}?`, "Remove")) return;
    try {
      await api("DELETE", `/webapi/mfa/devices/${encodeURIComponent(device)}`, {});
      showError(error, "");
      await draw();
      status.textContent = `Removed ${device}. ` + status.textContent;
    } catch (err) {
      failed(error, err);
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const label = name.value.trim();
    if (!label) {
      showError(addError, "name the key");
      name.focus();
      return;
    }
    showError(addError, "");
    const button = form.querySelector("#device-add");
    button.disabled = true;
    try {
      const begun = await api("POST", "/webapi/mfa/devices/registerchallenge",
        {passwordless: passkey.checked});
      let credential;
      try {
        credential = await createCredential(begun.webauthn_public_key);
      } catch (err) {
        throw new Error(keyError(err));
      }
      await api("POST", "/webapi/mfa/devices",
        {device_name: label, webauthn_creation_response: credential});
      await draw();
      status.textContent = `Added ${label}. ` + status.textContent;
    } catch (err) {
      failed(addError, err);
    } finally {
      button.disabled = false;
    }
  });

  api("GET", "/webapi/ping").then((ping) => {
    passkeyField.hidden = !(ping.auth && ping.auth.allow_passwordless);
    if (!(ping.auth && ping.auth.webauthn)) form.hidden = true;
  }).catch(() => {});
  await draw();
}
