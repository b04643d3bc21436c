// The page tsh links to when no security key is attached to its computer (/web/cli/webauthn).
//
// WebAuthn's RP ID is the proxy's host, so the ceremony runs here, on the proxy's origin. What
// to do rides in the URL fragment, which the browser never sends to any server: `kind` (get to
// log in, create to register), the server's `options`, tsh's `callback`, a `state` tsh checks,
// and `what` (words for the person). The answer goes only to tsh on this computer:
// http://127.0.0.1:<port>/callback, nothing else is accepted. The page talks to no server.
"use strict";

import {createCredential, getAssertion} from "./mfa.js";

const CALLBACK = /^http:\/\/127\.0\.0\.1:([0-9]{1,5})\/callback$/;
const STATE = /^[A-Za-z0-9_-]{16,128}$/;
const $ = (id) => document.getElementById(id);

/** The request tsh put in the fragment, checked; throws with words for the page. */
function readRequest(fragment) {
  const params = new URLSearchParams(fragment);
  const kind = params.get("kind");
  const callback = params.get("callback") || "";
  const state = params.get("state") || "";
  if (kind !== "get" && kind !== "create") throw new Error("this link is incomplete: run the tsh command again");
  const port = Number((CALLBACK.exec(callback) || [])[1] || 0);
  if (port < 1 || port > 65535) {
    throw new Error("this link does not lead back to tsh on this computer (http://127.0.0.1): " +
      "open only links tsh printed");
  }
  if (!STATE.test(state)) throw new Error("this link is incomplete: run the tsh command again");
  let options;
  try {
    options = JSON.parse(params.get("options") || "");
  } catch {
    throw new Error("this link is incomplete: run the tsh command again");
  }
  if (!options || typeof options.challenge !== "string") {
    throw new Error("this link is incomplete: run the tsh command again");
  }
  return {kind, callback, state, options, what: params.get("what") || ""};
}

function showError(message) {
  const box = $("cli-error");
  box.textContent = message;
  box.hidden = false;
  $("cli-status").textContent = "";
}

function keyError(err) {
  if (err?.name === "NotAllowedError") return "the security key did not answer (cancelled or timed out): try again";
  if (err?.name === "InvalidStateError") return "this security key is already registered: use another one";
  if (err?.name === "SecurityError") return "this browser refused the request for this site's address (RP ID)";
  return String(err?.message || err);
}

function start() {
  let request;
  try {
    request = readRequest(location.hash.slice(1));
  } catch (err) {
    $("cli-what").textContent = "";
    showError(err.message);
    return;
  }
  // The challenge stays out of the history and out of any later copy of the address.
  history.replaceState(null, "", location.pathname);
  const registering = request.kind === "create";
  $("cli-what").textContent = `tsh on this computer asks to ${request.what || (registering
    ? "register a security key" : "log in with your security key")}.`;
  const button = $("cli-go");
  button.textContent = registering ? "Register security key" : "Use security key";
  button.hidden = false;
  button.addEventListener("click", async () => {
    button.disabled = true;
    $("cli-error").hidden = true;
    $("cli-status").textContent = "Touch your security key or confirm on your device...";
    try {
      const credential = registering
        ? await createCredential(request.options) : await getAssertion(request.options);
      $("cli-status").textContent = "Handing the answer to tsh...";
      const query = new URLSearchParams({state: request.state, response: JSON.stringify(credential)});
      location.assign(`${request.callback}?${query}`);
    } catch (err) {
      showError(keyError(err));
      button.disabled = false;
    }
  });
  button.focus();
}

start();
