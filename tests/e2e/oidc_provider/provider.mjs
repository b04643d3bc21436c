// A real, certified OpenID Provider (panva's oidc-provider) for the OIDC e2e tests.
//
// Usage: node provider.mjs <config.json> [node_modules dir]
//
// Listens on 127.0.0.1, port 0, and only then builds the Provider with the issuer
// http://127.0.0.1:<port>, so discovery, redirects and the ID tokens' `iss` all carry the real
// port. When ready it prints exactly one line on stdout, {"issuer": ..., "port": ...}; everything
// else (events, errors) goes to stderr. It exits when stdin closes, so a test runner that dies
// leaves no orphan behind.
//
// The configuration file (JSON):
//   clients: [{client_id, client_secret, redirect_uris, ...any other client metadata}]
//   users: [{id, password, claims: {email, name, groups: [...], logins: [...], ...}}]
//   scopes: {"<scope>": ["<claim>", ...]}  extra scopes, besides openid/email/profile/groups/logins
//   claims_in_id_token: true               scope claims in the ID token too, not only at userinfo
//   require_pkce: true                     every authorization request must carry S256 PKCE
//   ttl: {"IdToken": 3600, ...}            oidc-provider's token lifetimes, in seconds
//
// The login page is ours (devInteractions off): a username (the user's id or email) and password
// form; a wrong password shows it again with an error. Consent is granted automatically.
//
// GET /test/events: {"events": [...]}, oldest first, what browsers met here, so a test can follow
// a login without asking the browser (WebDriver waits for pages that may never load):
//   {"type": "form", "uid"}: the login form was served;
//   {"type": "refused", "uid", "error"}: the form again, after a wrong password;
//   {"type": "error", "status", "path"}: an error page on a browser route (/auth, /interaction);
//   {"type": "departure", "url"}: a redirect away from the provider (to a client's redirect_uri,
//     with code and state, or with an error).
// Test control, POST with a JSON body:
//   /test/rotate-keys {"keep_old": false, "publish": true}: a fresh RSA key signs from now on and
//     comes first in the JWKS; the old ones stay published only with keep_old. With publish false
//     the new key signs but the JWKS goes on serving the previous keys (an unknown `kid`).
//   /test/users {"users": [...]}: replaces the users and their claims.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HOST = '127.0.0.1';
const BODY_LIMIT = 1 << 20;

const here = path.dirname(fileURLToPath(import.meta.url));
const [configPath, modulesArg] = process.argv.slice(2);
if (!configPath) {
  process.stderr.write('usage: node provider.mjs <config.json> [node_modules dir]\n');
  process.exit(2);
}
const modules = modulesArg || path.resolve(here, '../../../.cache/oidc-provider/node_modules');
let entry;
try {
  entry = createRequire(path.join(modules, 'noop.js')).resolve('oidc-provider');
} catch {
  process.stderr.write(`oidc-provider is not installed in ${modules}: run scripts/install-oidc-provider\n`);
  process.exit(2);
}
const { default: Provider, interactionPolicy } = await import(pathToFileURL(entry).href);

const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
let users = config.users || [];
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

const STANDARD_SCOPES = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username',
    'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at'],
  groups: ['groups'],
  logins: ['logins'],
};

function log(message) {
  process.stderr.write(`[oidc-provider] ${message}\n`);
}

function newKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };
}

function publicPart({ kty, kid, alg, use, n, e }) {
  return { kty, kid, alg, use, n, e };
}

// Signing keys, the first one signs; and the keys the JWKS endpoint serves.
let signing = [newKey()];
let published = signing.map(publicPart);

function samePublished() {
  const kids = (keys) => keys.map((k) => k.kid).join(' ');
  return kids(published) === kids(signing);
}

function findUser(login) {
  return users.find((u) => u.id === login || (u.claims && u.claims.email === login));
}

function buildProvider(issuer) {
  const policy = interactionPolicy.base();
  // Accept prompt=select_account, as large providers do; there is only one account to pick.
  policy.add(new interactionPolicy.Prompt({ name: 'select_account', requestable: true }), 0);
  const provider = new Provider(issuer, {
    clients: config.clients || [],
    jwks: { keys: signing },
    cookies: {
      keys: cookieKeys,
      // Cookies ignore ports: names of our own so the product's cookies on 127.0.0.1 are safe.
      names: { session: '_idp_session', interaction: '_idp_interaction', resume: '_idp_resume' },
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },
    claims: { ...STANDARD_SCOPES, ...(config.scopes || {}) },
    conformIdTokenClaims: config.claims_in_id_token === false,
    features: { devInteractions: { enabled: false } },
    interactions: { policy, url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    pkce: { methods: ['S256'], required: () => config.require_pkce !== false },
    ttl: config.ttl || {},
    async findAccount(ctx, id) {
      const user = users.find((u) => u.id === id);
      if (!user) return undefined;
      return { accountId: id, claims: async () => ({ ...(user.claims || {}), sub: id }) };
    },
  });
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error']) {
    provider.on(event, (ctx, err) => log(`${event}: ${err.name}: ${err.message}${err.error_detail ? ` (${err.error_detail})` : ''}`));
  }
  return { provider, handler: provider.callback() };
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, clientId, error, username) {
  const alert = error ? `<p id="error" role="alert">${escapeHtml(error)}</p>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Sign in - test OpenID Provider</title></head>
<body><main>
<h1>Sign in</h1>
<p>to continue to <strong id="client">${escapeHtml(clientId)}</strong></p>
${alert}
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login">
<p><label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required value="${escapeHtml(username || '')}"></p>
<p><label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button id="submit" type="submit">Sign in</button></p>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort"><button id="cancel" type="submit">Cancel</button></form>
</main></body></html>
`;
}

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, 'application/json', `${JSON.stringify(value)}\n`);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > BODY_LIMIT) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function readJson(req) {
  const text = await readBody(req);
  return text.trim() ? JSON.parse(text) : {};
}

async function grantConsent(provider, details) {
  const { prompt: { details: missing }, params, session: { accountId } } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return details.grantId ? {} : { grantId };
}

// The state the process serves; `current` is rebuilt on key rotation. The adapter's storage is
// shared by all Provider instances of the process, so sessions and codes survive a rotation.
let issuer;
let current;
// What browsers met here, oldest first (GET /test/events).
const events = [];

async function interaction(req, res, uid, action) {
  const { provider } = current;
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, 'text/plain', 'this sign-in attempt has expired, start again\n');
    return;
  }
  const clientId = details.params.client_id;
  if (req.method === 'GET') { // also after a refused password, where the address ends in /login
    switch (details.prompt.name) {
      case 'login':
        events.push({ type: 'form', uid });
        send(res, 200, 'text/html; charset=utf-8', loginPage(uid, clientId));
        return;
      case 'consent':
        await provider.interactionFinished(req, res, { consent: await grantConsent(provider, details) },
          { mergeWithLastSubmission: true });
        return;
      case 'select_account':
        await provider.interactionFinished(req, res, { select_account: {} }, { mergeWithLastSubmission: true });
        return;
      default:
        send(res, 400, 'text/plain', `unsupported prompt ${details.prompt.name}\n`);
        return;
    }
  }
  if (req.method !== 'POST') {
    send(res, 405, 'text/plain', 'method not allowed\n');
    return;
  }
  const form = new URLSearchParams(await readBody(req));
  if (action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }
  if (action !== 'login' || details.prompt.name !== 'login') {
    send(res, 400, 'text/plain', 'unexpected interaction step\n');
    return;
  }
  const username = form.get('username') || '';
  const user = findUser(username);
  const given = Buffer.from(form.get('password') || '');
  const want = Buffer.from(user ? String(user.password) : '');
  if (!user || given.length !== want.length || !crypto.timingSafeEqual(given, want)) {
    log(`login refused for ${JSON.stringify(username)}`);
    events.push({ type: 'refused', uid, error: 'Invalid username or password.' });
    send(res, 200, 'text/html; charset=utf-8', loginPage(uid, clientId, 'Invalid username or password.', username));
    return;
  }
  log(`login of ${user.id}`);
  await provider.interactionFinished(req, res, { login: { accountId: user.id, amr: ['pwd'] } },
    { mergeWithLastSubmission: false });
}

async function testControl(req, res, name) {
  if (req.method !== 'POST') {
    send(res, 405, 'text/plain', 'method not allowed\n');
    return;
  }
  const body = await readJson(req);
  if (name === 'rotate-keys') {
    const key = newKey();
    signing = body.keep_old ? [key, ...signing] : [key];
    if (body.publish !== false) {
      published = body.keep_old ? [publicPart(key), ...published] : [publicPart(key)];
    }
    current = buildProvider(issuer);
    log(`signing key rotated to ${key.kid}`);
    sendJson(res, 200, { kid: key.kid, published: published.map((k) => k.kid) });
  } else if (name === 'users') {
    if (!Array.isArray(body.users)) {
      sendJson(res, 400, { error: 'body must be {"users": [...]}' });
      return;
    }
    users = body.users;
    sendJson(res, 200, { users: users.map((u) => u.id) });
  } else {
    sendJson(res, 404, { error: `no test endpoint ${name}` });
  }
}

async function handle(req, res) {
  const { pathname } = new URL(req.url, issuer);
  let m = pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?$/);
  if (m) {
    await interaction(req, res, m[1], m[2]);
    return;
  }
  m = pathname.match(/^\/test\/([a-z-]+)$/);
  if (m && m[1] === 'events' && req.method === 'GET') {
    sendJson(res, 200, { events });
    return;
  }
  if (m) {
    await testControl(req, res, m[1]);
    return;
  }
  if (pathname === '/jwks' && req.method === 'GET' && !samePublished()) {
    // After a rotation with publish false: the previous keys, not the one that now signs.
    res.setHeader('Content-Type', 'application/jwk-set+json; charset=utf-8');
    res.end(JSON.stringify({ keys: published }));
    return;
  }
  current.handler(req, res);
}

const server = http.createServer((req, res) => {
  res.on('finish', () => {
    const location = res.getHeader('location');
    if (res.statusCode >= 300 && res.statusCode < 400 && location) {
      const target = new URL(String(location), `${issuer}/`).href;
      if (!target.startsWith(`${issuer}/`)) events.push({ type: 'departure', url: target });
    }
    const { pathname } = new URL(req.url, issuer);
    if (res.statusCode >= 400 && /^\/(auth|interaction)(\/|$)/.test(pathname)) {
      events.push({ type: 'error', status: res.statusCode, path: pathname });
    }
  });
  handle(req, res).catch((err) => {
    log(`error on ${req.method} ${req.url}: ${err.stack || err}`);
    if (!res.headersSent) {
      send(res, err.statusCode || 500, 'text/plain', `${err.error_description || err.message}\n`);
    } else {
      res.end();
    }
  });
});

server.listen(0, HOST, () => {
  const { port } = server.address();
  issuer = `http://${HOST}:${port}`;
  try {
    current = buildProvider(issuer);
  } catch (err) {
    log(`bad configuration: ${err.message}`);
    process.exit(2);
  }
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
