"""The proxy's server-rendered HTML: the web UI's shell, the signup and error pages.

Pages carry no framework and no third-party assets; their one inline style and script are
allowed by hash in the Content-Security-Policy, so injected markup could not run even if
escaping were ever missed.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

import segno

_CSS = """
:root { color-scheme: light dark; font-family: system-ui, sans-serif; }
html { background: Canvas; color: CanvasText; }  /* explicit, so axe-core sees dark mode */
body { margin: 0; display: flex; justify-content: center; }
main { max-width: 34rem; margin: 3rem 1rem; }
h1 { font-size: 1.5rem; }
label { display: block; margin: 0.8rem 0; }
input { display: block; width: 100%; box-sizing: border-box; padding: 0.5rem; font-size: 1rem; }
button { padding: 0.6rem 1.2rem; font-size: 1rem; }
code { font-size: 1.1rem; word-break: break-all; }
svg.qr { background: #fff; }
.error { color: #c62828; }
.done { color: #2e7d32; }
@media (prefers-color-scheme: dark) { .error { color: #ff8a80; } .done { color: #81c784; } }
"""

_SIGNUP_JS = """
"use strict";
const form = document.getElementById("signup");
const error = document.getElementById("error");
const done = document.getElementById("done");
function showError(message) { error.textContent = message; error.hidden = false; }
// Security keys (WebAuthn): the options come as JSON with base64url binary fields.
const b64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
  .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
const unb64u = (text) => Uint8Array.from(
  atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4)),
  (c) => c.charCodeAt(0));
async function registerKey() {
  const resp = await fetch(`/webapi/mfa/token/${encodeURIComponent(form.dataset.token)}/registerchallenge`,
    {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((body.error && body.error.message) || ("HTTP " + resp.status));
  const o = body.webauthn_public_key;
  const cred = await navigator.credentials.create({publicKey: {...o, challenge: unb64u(o.challenge),
    user: {...o.user, id: unb64u(o.user.id)},
    excludeCredentials: (o.excludeCredentials || []).map((c) => ({...c, id: unb64u(c.id)}))}});
  const r = cred.response;
  return {id: cred.id, rawId: b64u(cred.rawId), type: cred.type,
    clientExtensionResults: cred.getClientExtensionResults(),
    response: {clientDataJSON: b64u(r.clientDataJSON), attestationObject: b64u(r.attestationObject),
      transports: r.getTransports ? r.getTransports() : []}};
}
const choices = form.querySelectorAll("input[name=mfa]");
function showChoice() {
  const picked = form.querySelector("input[name=mfa]:checked");
  const kind = picked ? picked.value : form.dataset.default;
  for (const el of document.querySelectorAll("[data-mfa]")) el.hidden = el.dataset.mfa !== kind;
  const otp = form.querySelector("input[name=otp]");
  if (otp) otp.required = kind === "otp";
}
for (const choice of choices) choice.addEventListener("change", showChoice);
showChoice();
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const data = new FormData(form);
  if (data.get("password") !== data.get("confirm")) { showError("passwords do not match"); return; }
  const kind = data.get("mfa") || form.dataset.default;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    let key = null;
    if (kind === "key") {
      try {
        key = await registerKey();
      } catch (err) {
        showError("the security key was not registered: " + err.message);
        return;
      }
    }
    const resp = await fetch("/webapi/users/password/token", {
      method: "PUT",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({token: form.dataset.token, password: data.get("password"),
                            second_factor_token: kind === "otp" ? (data.get("otp") || "") : "",
                            webauthn_creation_response: key,
                            device_name: key ? (data.get("device") || "") : ""}),
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      showError((body.error && body.error.message) || ("sign up failed: HTTP " + resp.status));
      return;
    }
    document.getElementById("setup").hidden = true;
    done.textContent = "You can now log in with tsh login --proxy=" + form.dataset.proxy +
      " --user=" + body.user;
    done.hidden = false;
    document.getElementById("web-login").hidden = false;
  } catch (err) {
    showError("cannot reach the proxy: " + err.message);
  } finally {
    button.disabled = false;
  }
});
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_BASE_CSP = ("default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
             f"style-src {_sha256(_CSS)}")
#: Policy for pages without script (landing, errors).
PAGE_CSP = _BASE_CSP
#: Policy for the signup page: its own script, and fetch() back to this origin only.
SIGNUP_CSP = f"{_BASE_CSP}; script-src {_sha256(_SIGNUP_JS)}; connect-src 'self'"


def _page(title: str, body: str, script: str = "") -> str:
    tail = f"<script>{script}</script>" if script else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><main>{body}</main>{tail}</body></html>\n")


#: Policy for the web UI: its scripts, styles and fonts from this origin only, API calls and the
#: terminal's websocket back to it (`'self'` covers wss: of the same host in today's browsers).
APP_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
           "frame-ancestors 'none'")


def app_shell(*, cluster_name: str, bearer: str, user: str) -> str:
    """Render the UI's one page: the script draws every route from the URL.

    The bearer token of the browser's session rides in the page, readable by this origin only,
    so a new tab needs no stored secret and a cross-site page cannot learn it.
    """
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="teleport-cluster" content="{escape(cluster_name)}">'
            f'<meta name="teleport-bearer" content="{escape(bearer)}">'
            f'<meta name="teleport-user" content="{escape(user)}">'
            "<title>Teleport</title>"
            '<link rel="icon" href="/web/app/favicon.svg" type="image/svg+xml">'
            '<link rel="stylesheet" href="/web/app/vendor/xterm/xterm.css">'
            '<link rel="stylesheet" href="/web/app/app.css">'
            '<script type="module" src="/web/app/app.js"></script>'
            '</head><body><div id="app"></div></body></html>\n')


def sso_done_page(user: str) -> str:
    """What a browser sees after a GitHub or OIDC login: on to the UI, from this origin.

    A refresh from this page is a same-site navigation, so the SameSite=Strict session cookie
    goes with it (it would not on a redirect at the end of the provider's chain).
    """
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="refresh" content="0;url=/web">'
            f"<title>Logged in</title><style>{_CSS}</style></head>"
            f"<body><main><h1>Logged in as {escape(user)}</h1>"
            '<p><a href="/web">Continue to Teleport</a></p></main></body></html>\n')


def qr_svg(uri: str) -> str:
    """Render a URI as an inline SVG QR code, so authenticator apps can scan it."""
    return str(segno.make(uri, error="m").svg_inline(scale=4, svgclass="qr", title="QR code for your authenticator app"))


#: The second factors under which an authenticator app (OTP) may be enrolled at signup.
OTP_FACTORS = ("otp", "on", "optional")


def _mfa_choices(second_factor: str, with_key: bool) -> list[tuple[str, str]]:
    """The second factors a signup may enroll: (value, label), the first the default."""
    choices = []
    if with_key and second_factor in ("webauthn", "on", "optional"):
        choices.append(("key", "Security key or passkey"))
    if second_factor in OTP_FACTORS:
        choices.append(("otp", "Authenticator app"))
    if second_factor in ("off", "optional"):
        choices.append(("none", "None"))
    return choices


def signup_page(*, cluster_name: str, user: str, token: str, public_addr: str,
                second_factor: str, otp_secret: str, otp_uri: str, usage: str = "signup",
                webauthn: bool = False) -> str:
    """Let a new user pick a password and enroll an authenticator app or a security key
    (`webauthn`: the cluster uses keys), or a reset user anew."""
    choices = _mfa_choices(second_factor, webauthn)
    with_otp = any(value == "otp" for value, _ in choices)
    reset = usage == "reset"
    otp_setup = otp_field = picker = key_field = ""
    if len(choices) > 1:
        picker = ('<fieldset><legend>Second factor</legend>' + "".join(
            f'<label><input type="radio" name="mfa" value="{value}"'
            f'{" checked" if i == 0 else ""}> {label}</label>'
            for i, (value, label) in enumerate(choices)) + "</fieldset>")
    if any(value == "key" for value, _ in choices):
        key_field = (
            '<div data-mfa="key"><p>Your browser asks for a security key (or a passkey) '
            "when you create the account.</p>"
            '<label>Key name<input name="device" value="security-key" maxlength="64" '
            'autocomplete="off"></label></div>')
    if with_otp:
        otp_setup = (
            '<div data-mfa="otp"><h2>Authenticator app</h2><p>Scan this QR code with an authenticator app '
            "(Google Authenticator, Authy, ...) or type in the secret:</p>"
            f"<figure>{qr_svg(otp_uri)}</figure>"
            f'<p><code id="otp-secret">{escape(otp_secret)}</code></p></div>')
        otp_field = ('<label data-mfa="otp">One-time code from the app<input name="otp" required '
                     'inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6,8}">'
                     "</label>")
    heading = (f"Reset your password on {escape(cluster_name)}" if reset
               else f"Welcome to {escape(cluster_name)}")
    intro = ("Your password and second factor were reset. Choose a new password for user"
             if reset else "Create the password of user")
    body = (
        f"<h1>{heading}</h1>"
        f'<div id="setup"><p>{intro} <strong id="user">{escape(user)}</strong>.'
        f"</p>"
        # method=post keeps the password out of the URL should the script fail to load.
        f'<form id="signup" method="post" data-token="{escape(token)}" '
        f'data-proxy="{escape(public_addr)}" data-default="{choices[0][0] if choices else "none"}">'
        f"{picker}{otp_setup}{key_field}"
        '<label>Password<input type="password" name="password" required minlength="6" '
        'maxlength="128" autocomplete="new-password"></label>'
        '<label>Confirm password<input type="password" name="confirm" required minlength="6" '
        'maxlength="128" autocomplete="new-password"></label>'
        f'{otp_field}<button type="submit">{"Reset password" if reset else "Create account"}'
        "</button>"
        '<p id="error" class="error" role="alert" hidden></p></form></div>'
        '<p id="done" class="done" role="status" hidden></p>'
        '<p id="web-login" hidden><a href="/web/login">Log in to the web UI</a></p>')
    return _page(f"{'Reset password' if reset else 'Sign up'}: {user}", body, _SIGNUP_JS)


def error_page(status: int, message: str) -> str:
    """Explain in a browser what went wrong, in one line, without internals."""
    return _page(f"Error {status}", f"<h1>Error {status}</h1>"
                                     f'<p class="error">{escape(message)}</p>')
