#!/usr/bin/env node
// A real OpenID Provider (node `oidc-provider`) for infra's integration tests.
//
//   node tests/oidc/provider.mjs
//
// Listens on 127.0.0.1 only. Once it accepts connections it prints exactly one
// line to stdout and nothing else ever goes to stdout:
//
//   OIDC_ISSUER=http://127.0.0.1:<port>
//
// Everything else (oidc-provider's development-mode warnings, admin actions,
// request errors; request logs with OIDC_DEBUG=1) goes to stderr. Keep stderr
// inherited or drained (or Stdio::null) so a full pipe never blocks it.
// SIGTERM / SIGINT stop it with exit status 0. It also exits by itself within
// about a second when its parent process goes away (its ppid changes), so a
// killed test run leaves no provider behind; OIDC_WATCH_PARENT=0 turns that off.
//
// Configuration (environment):
//   OIDC_PORT             port on 127.0.0.1; default 0 = any free port
//   OIDC_CLIENT_ID        default "infra-test"
//   OIDC_CLIENT_SECRET    default "infra-test-secret". Set to the empty string
//                         for a public client (token_endpoint_auth_method none;
//                         PKCE is required anyway).
//   OIDC_REDIRECT_URIS    comma-separated; default
//                         "http://localhost:8301,http://localhost:8302"
//                         A URI with no path is registered with and without a
//                         trailing "/" (http://h:1 and http://h:1/). Otherwise
//                         matching is exact, and the token request must repeat
//                         the authorization request's redirect_uri exactly.
//   OIDC_APPLICATION_TYPE "native" (default) or "web". With "native" a redirect
//                         URI on a loopback host (localhost, 127.0.0.1, [::1]) over
//                         http matches a registered one whatever its port
//                         (RFC 8252 7.3): register http://127.0.0.1/callback and
//                         use any port. Scheme, host and path must still match
//                         exactly. With "web" the whole URI must match exactly.
//                         (oidc-provider's "native clients always get the
//                         consent page" rule is switched off either way.)
//   OIDC_GROUPS           JSON object login -> array of groups, e.g.
//                         {"alice":["dev","ops"]}; anyone else has [].
//   OIDC_ACCOUNTS         JSON object login -> claim overrides for that account:
//                         {claim: value} replaces the default value (any JSON
//                         value, used as is), {claim: null} removes the claim
//                         from the ID token and userinfo. Claims that can be
//                         given: email, email_verified, name, preferred_username,
//                         groups (anything else, sub included, is refused: exit
//                         status 2). E.g.
//                           {"nameless":{"name":null,"email":null,"email_verified":null,
//                                        "preferred_username":null,"groups":null},
//                            "carol":{"email":"carol@corp.example","groups":["a"]}}
//                         "nameless" then has only sub. (Without "groups":null it
//                         keeps "groups":[] like every account without groups,
//                         when the groups scope is granted.) An overridden
//                         groups wins over OIDC_GROUPS; a later /__admin/groups
//                         for that account wins over both. Unlisted accounts and
//                         unlisted claims keep the defaults (see "Claims").
//   OIDC_CLOCK_OFFSET     seconds, may be negative; default 0. The provider runs
//                         on a clock shifted by that much (Date.now() is shifted
//                         for the whole process): everything it stamps is
//                         shifted, i.e. the ID token's iat, exp and auth_time,
//                         and the expiry of access tokens, refresh tokens, codes,
//                         interactions and sessions. It checks its own tokens and
//                         codes on the same shifted clock, so the whole flow works
//                         as usual: codes are redeemable, userinfo accepts the
//                         access token, refresh works, and expires_in is still the
//                         TTL. What a client sees is only the ID token's times:
//                         with -7200 and the default ID token TTL (3600) the ID
//                         token from /token (and from each refresh) expired an
//                         hour ago; with +7200 its iat is 2 h in the future.
//                         Cookie expiry dates are converted back to real time,
//                         so browsers keep the interaction and session cookies.
//                         (auth_time is in the ID token only when requested, e.g.
//                         with max_age=<seconds> in the authorization request.)
//   OIDC_ACCESS_TOKEN_TTL seconds; default 3600
//   OIDC_ID_TOKEN_TTL     seconds; default 3600
//   OIDC_REFRESH_TOKEN_TTL seconds; default 14 days
//   OIDC_ROTATE_REFRESH_TOKEN "1": every refresh returns a new refresh token and
//                         the old one stops working; "0": never rotate; unset:
//                         oidc-provider's default (a confidential client keeps its
//                         refresh token until 70% of its lifetime has passed).
//   OIDC_REFRESH_TOKENS   "offline_access" (default): a refresh token only when
//                         offline_access was granted, which needs the
//                         authorization request to carry prompt=consent (see
//                         below). "always": a refresh token with every code
//                         exchange, whatever the scope and prompt (it then ends
//                         with the IdP session, like oidc-provider does for
//                         tokens without offline_access). "never": no refresh
//                         token ever, and offline_access is neither a scope of
//                         the discovery document nor granted (a provider that
//                         offers no refresh tokens).
//   OIDC_ADMIN_TOKEN      enables the /__admin/* endpoints below (404 without it)
//   OIDC_TLS_CERT, OIDC_TLS_KEY  PEM files: serve HTTPS (issuer https://127.0.0.1:PORT)
//   OIDC_DEBUG            "1": log every request line and status to stderr
//   OIDC_WATCH_PARENT     "0": don't exit when the parent process goes away
//
// Client: one client, grant types authorization_code + refresh_token, response
// type code. It is registered with token_endpoint_auth_method
// client_secret_basic, but oidc-provider accepts client_secret_post for it too
// (a secret in the form body or HTTP Basic both work; just not both at once).
// HTTP Basic credentials are form-urlencoded before base64 (RFC 6749 2.3.1);
// the default id and secret contain nothing that encoding changes.
// PKCE (S256 only) is required on every authorization request.
//
// Scopes: openid email profile groups offline_access. Claims:
//   openid  -> sub (= the login name typed in the login form)
//   email   -> email (<login>@example.com, or <login> itself if it contains '@'),
//              email_verified (true)
//   profile -> name (= login), preferred_username (= login)
//   groups  -> groups (array of strings, from OIDC_GROUPS / /__admin/groups)
// OIDC_ACCOUNTS / /__admin/account replace or remove these per account.
// These claims are in the ID token too (conformIdTokenClaims: false), as well as
// from the userinfo endpoint, for the scopes that were granted.
// Refresh tokens (OIDC_REFRESH_TOKENS unset): one is issued when offline_access
// was requested AND granted. oidc-provider silently drops offline_access from
// every authorization request whose `prompt` does not include `consent`,
// including requests with no `prompt` at all. So to get a refresh token ask for
// scope=openid ... offline_access&prompt=consent. prompt=consent shows the
// consent page on every authorization, even within a live IdP session (the
// login page is skipped then). Without prompt=consent and with a live session
// and a grant that covers the scopes, the authorization endpoint redirects
// straight to the redirect_uri with a code, without any page.
// The authorization response carries `iss` too (RFC 9207):
//   <redirect_uri>?code=...&state=...&iss=http%3A%2F%2F127.0.0.1%3A<port>
//
// Endpoints (discovery at /.well-known/openid-configuration):
//   /auth (authorization), /token, /me (userinfo), /jwks, /token/revocation,
//   /session/end (RP-initiated logout), /request (PAR).
//   ID tokens are RS256-signed with a key generated at each start.
//
// Admin endpoints for tests (only when OIDC_ADMIN_TOKEN is set; each needs
// header "Authorization: Bearer $OIDC_ADMIN_TOKEN", else 401; answers JSON):
//   POST /__admin/revoke?sub=ID   ends everything of account ID: its sessions
//        (the next authorization request shows the login form again), grants,
//        authorization codes, access tokens and refresh tokens. Using one of
//        its refresh tokens then fails with invalid_grant, and its access tokens
//        with invalid_token at userinfo. sub may also be given as JSON body
//        {"sub":"ID"}. Answers {"revoked":<number of objects removed>}.
//   POST /__admin/groups  body {"sub":"alice","groups":["dev"]} sets that
//        account's groups from now on (userinfo, and tokens issued later,
//        including by a refresh). Drops a groups override of that account
//        (OIDC_ACCOUNTS, /__admin/account): the latest setting wins.
//   POST /__admin/account body {"sub":"nameless","claims":{"name":null,...}}
//        sets that account's claim overrides, same format and rules as one
//        entry of OIDC_ACCOUNTS, replacing the account's previous overrides
//        ({"claims":{}} restores the defaults). Takes effect at once for
//        userinfo (also with access tokens issued earlier) and for ID tokens
//        issued later (including by a refresh). Answers {"sub":..,"claims":{..}};
//        400 for a claim that cannot be set or claims that are not an object.
//   POST /__admin/tamper  body {"idTokenAudience":"someone-else"}: every ID
//        token issued from now on (code exchange and refresh) has
//        "aud":"someone-else" instead of the client id; everything else in it is
//        unchanged and it is still correctly RS256-signed with the provider's
//        key from /jwks. An array of strings gives an array aud.
//        {"idTokenAudience":null} turns it off. Other keys: 400. Answers
//        {"tamper":{"idTokenAudience":...}}.
//   POST /__admin/down    every other request gets 503 until /__admin/up.
//        POST /__admin/down?mode=close drops every other connection instead,
//        without an answer (like a crashed server; new connections are still
//        accepted, then closed).
//   POST /__admin/up      back to normal.
//   GET  /__admin/state   {"down":false|"503"|"close","groups":{...},
//        "accounts":{login:{claim overrides}},"tamper":{"idTokenAudience":null|..},
//        "clockOffset":<OIDC_CLOCK_OFFSET>}
//
// ---------------------------------------------------------------------------
// Headless "browser" walk from the authorization URL to the redirect.
// selftest.mjs does exactly this. (In Rust: reqwest with
// redirect::Policy::none() and a cookie store, e.g. reqwest::cookie::Jar,
// which honours Path, also works.) Never follow redirects automatically: read
// each Location header yourself. Relative Location values are relative to the
// issuer. Keep a cookie jar. A jar keyed by cookie name alone (ignoring Path)
// is enough: on every request send every cookie received so far whose last
// Set-Cookie had a non-empty value and was not expired (the provider deletes
// cookies with an empty value and `expires=Thu, 01 Jan 1970 ...`). The
// cookies involved are _interaction, _interaction.sig (Path=/interaction/<uid>),
// _interaction_resume, _interaction_resume.sig (Path=/auth/<uid>), _session,
// _session.sig (Path=/), all httpOnly, SameSite=Lax, not Secure (plain http).
// A response may delete a cookie and set it again with a new value (the
// resume cookie in step 4): apply Set-Cookie headers in order.
//
//  1. GET <authorization_endpoint>?client_id=infra-test&response_type=code
//       &redirect_uri=<registered>&scope=openid+email+profile+groups+offline_access
//       &state=<s>&code_challenge=<S256 of verifier>&code_challenge_method=S256
//       &prompt=consent [&nonce=<n>]      (prompt=consent: see "Refresh tokens")
//     -> 303, Location: /interaction/<uid>; sets _interaction, _interaction_resume
//        (+ .sig).
//  2. GET /interaction/<uid>  -> 200 HTML. The login page holds
//       <form action="http://127.0.0.1:<port>/interaction/<uid>" method="post">
//         <input type="hidden" name="prompt" value="login"/>
//         <input name="login"> <input type="password" name="password"> ...
//  3. POST /interaction/<uid>
//       Content-Type: application/x-www-form-urlencoded
//       body: prompt=login&login=<login name>&password=<anything, may be empty>
//     -> 303, Location: http://127.0.0.1:<port>/auth/<uid>
//  4. GET /auth/<uid>  (needs the _interaction_resume cookie)
//     -> 303, Location: /interaction/<uid2>; sets _session (the IdP session),
//        a new _interaction / _interaction_resume for uid2.
//  5. GET /interaction/<uid2> -> 200 HTML, the consent page:
//       <form action=".../interaction/<uid2>" method="post">
//         <input type="hidden" name="prompt" value="consent"/> <button>Continue</button>
//  6. POST /interaction/<uid2>  body: prompt=consent
//     -> 303, Location: http://127.0.0.1:<port>/auth/<uid2>
//  7. GET /auth/<uid2> -> 303, Location: <redirect_uri>?code=<code>&state=<s>&iss=<issuer>
//     (a redirect_uri without a path comes back with "/": http://localhost:8301/?code=...)
//     Stop here: don't request the redirect_uri unless it is your own listener
//     (for the CLI login flow it is: send the browser there).
//
// Generic loop that covers every case (e.g. with a live _session the provider
// skips the login page and goes straight to consent, or straight to the code
// once consent was given for those scopes; after /__admin/revoke the login page
// comes back): follow 3xx Locations with GET; when a Location starts with the
// redirect_uri, stop. On a 200 from /interaction/<uid>, if the HTML contains
// name="login" POST prompt=login&login=<name>&password=x to that same URL,
// otherwise POST prompt=consent. Any other 4xx/5xx is an error page (HTML
// with the error and error_description in <pre> elements); errors that can be
// sent to the client come back instead as
// <redirect_uri>?error=...&error_description=...&state=...&iss=...
// (GET /interaction/<uid>/abort returns error=access_denied that way.)
//
// Token endpoint: POST /token, grant_type=authorization_code&code=...
//   &redirect_uri=...&code_verifier=..., client authenticated with HTTP Basic or
//   client_id+client_secret in the body. refresh: grant_type=refresh_token
//   &refresh_token=... . The code lives 60 s and works once.
// ---------------------------------------------------------------------------

// oidc-provider writes its notices with console.info; stdout is reserved for
// the OIDC_ISSUER line, so send every console method to stderr.
for (const m of ['log', 'info', 'debug']) {
  console[m] = (...args) => console.error(...args);
}
// Expected in this setup, not worth a line in every test's output: oidc-provider
// 9 wants Node 22 LTS but works on Node >= 20.18 (warns "Unsupported runtime"),
// and devInteractions is what we want here. Shown with OIDC_DEBUG=1.
const QUIET_WARNINGS = [/Unsupported runtime/, /devInteractions is enabled/];
{
  const warn = console.warn.bind(console);
  console.warn = (...args) => {
    if (process.env.OIDC_DEBUG !== '1' && typeof args[0] === 'string'
      && QUIET_WARNINGS.some((re) => re.test(args[0]))) return;
    warn(...args);
  };
}

import {
  generateKeyPairSync, randomBytes, randomUUID, sign as cryptoSign, timingSafeEqual,
} from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import { readFileSync } from 'node:fs';

// Imported only now, after the console set-up above (static imports would run first).
const { default: Provider, interactionPolicy } = await import('oidc-provider');

const env = process.env;
const NO_REFRESH = env.OIDC_REFRESH_TOKENS === 'never';

function envInt(name, def, { signed = false } = {}) {
  const raw = env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || (!signed && n < 0)) {
    console.error(`provider.mjs: ${name} must be a${signed ? 'n' : ' non-negative'} integer, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

function envJson(name) {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  try {
    return JSON.parse(raw);
  } catch (e) {
    console.error(`provider.mjs: ${name} is not JSON: ${e.message}`);
    process.exit(2);
  }
}

const PORT = envInt('OIDC_PORT', 0);
const CLIENT_ID = env.OIDC_CLIENT_ID || 'infra-test';
const CLIENT_SECRET = env.OIDC_CLIENT_SECRET ?? 'infra-test-secret';
// A URI without a path is registered both as given and with a trailing "/",
// since URL libraries (Rust's url::Url, WHATWG URL) write http://h:1 as http://h:1/.
const REDIRECT_URIS = [...new Set((env.OIDC_REDIRECT_URIS || 'http://localhost:8301,http://localhost:8302')
  .split(',').map((s) => s.trim()).filter(Boolean)
  .flatMap((u) => {
    const m = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]+)\/?$/i.exec(u);
    return m ? [m[1], `${m[1]}/`] : [u];
  }))];
const APPLICATION_TYPE = env.OIDC_APPLICATION_TYPE || 'native';
const ACCESS_TOKEN_TTL = envInt('OIDC_ACCESS_TOKEN_TTL', 3600);
const ID_TOKEN_TTL = envInt('OIDC_ID_TOKEN_TTL', 3600);
const REFRESH_TOKEN_TTL = envInt('OIDC_REFRESH_TOKEN_TTL', 14 * 24 * 3600);
const ADMIN_TOKEN = env.OIDC_ADMIN_TOKEN || '';
const DEBUG = env.OIDC_DEBUG === '1';
const CLOCK_OFFSET = envInt('OIDC_CLOCK_OFFSET', 0, { signed: true });

if (!['native', 'web'].includes(APPLICATION_TYPE)) {
  console.error('provider.mjs: OIDC_APPLICATION_TYPE must be "native" or "web"');
  process.exit(2);
}

const groups = new Map();
{
  const parsed = envJson('OIDC_GROUPS');
  for (const [sub, list] of Object.entries(parsed ?? {})) {
    if (!Array.isArray(list)) {
      console.error(`provider.mjs: OIDC_GROUPS.${sub} must be an array`);
      process.exit(2);
    }
    groups.set(sub, list.map(String));
  }
}

// Per-account claim overrides (OIDC_ACCOUNTS, /__admin/account):
// login -> { claim: value | null }; null removes the claim.
const OVERRIDABLE_CLAIMS = ['email', 'email_verified', 'name', 'preferred_username', 'groups'];

// Returns the checked override object, or throws an Error saying what is wrong.
function checkOverrides(sub, claims) {
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
    throw new Error(`claims of ${sub} must be a JSON object`);
  }
  const out = {};
  for (const [k, v] of Object.entries(claims)) {
    if (!OVERRIDABLE_CLAIMS.includes(k)) {
      throw new Error(`claim ${JSON.stringify(k)} of ${sub} cannot be set (allowed: ${OVERRIDABLE_CLAIMS.join(', ')}; null removes one)`);
    }
    out[k] = v; // any JSON value, as is (tests may want malformed claims too)
  }
  return out;
}

const accounts = new Map();
{
  const parsed = envJson('OIDC_ACCOUNTS');
  if (parsed !== undefined && (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))) {
    console.error('provider.mjs: OIDC_ACCOUNTS must be a JSON object login -> claims');
    process.exit(2);
  }
  for (const [sub, claims] of Object.entries(parsed ?? {})) {
    try {
      accounts.set(sub, checkOverrides(sub, claims));
    } catch (e) {
      console.error(`provider.mjs: OIDC_ACCOUNTS: ${e.message}`);
      process.exit(2);
    }
  }
}

// Runtime tamper switches (/__admin/tamper).
const tamper = { idTokenAudience: null };

// ---- clock (OIDC_CLOCK_OFFSET) --------------------------------------------
// oidc-provider (and our adapter) read the time only through Date.now(), so
// shifting Date.now() for the whole process shifts everything it stamps and
// checks by the same amount: tokens, codes, interactions, sessions. Only cookie
// expiry dates leave the process; those are shifted back to real time when the
// response headers are written (realCookieExpiry below), so browsers keep them.

const CLOCK_OFFSET_MS = CLOCK_OFFSET * 1000;
if (CLOCK_OFFSET_MS) {
  const realNow = Date.now.bind(Date);
  Date.now = () => realNow() + CLOCK_OFFSET_MS;
  console.error(`provider.mjs: clock shifted by ${CLOCK_OFFSET} s (OIDC_CLOCK_OFFSET)`);
}

function realCookieExpiry(cookie) {
  return cookie.replace(/;\s*expires=([^;]+)/gi, (all, date) => {
    const t = Date.parse(date);
    if (!(t > 0)) return all; // deletion (1970-01-01) or unparsable: leave alone
    return `; expires=${new Date(t - CLOCK_OFFSET_MS).toUTCString()}`;
  });
}

// ---- storage: one in-memory map for every oidc-provider model -------------
// (our own adapter, so /__admin/revoke can find everything of an account)

const store = new Map(); // `${model}:${id}` -> { model, id, payload, exp }
const nowSec = () => Math.floor(Date.now() / 1000);

function live(key) {
  const e = store.get(key);
  if (!e) return undefined;
  if (e.exp && e.exp <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return e;
}

class TestAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), {
      model: this.model,
      id,
      payload,
      exp: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : 0,
    });
  }

  async find(id) {
    return live(this.key(id))?.payload;
  }

  #findBy(field, value) {
    for (const [key, e] of store) {
      if (e.model === this.model && e.payload[field] === value && live(key)) return e.payload;
    }
    return undefined;
  }

  async findByUid(uid) {
    return this.#findBy('uid', uid);
  }

  async findByUserCode(userCode) {
    return this.#findBy('userCode', userCode);
  }

  async consume(id) {
    const e = live(this.key(id));
    if (e) e.payload.consumed = nowSec();
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const [key, e] of store) {
      if (e.payload.grantId === grantId) store.delete(key);
    }
  }
}

// Removes sessions, grants and every token of an account.
function revokeAccount(sub) {
  const grantIds = new Set();
  for (const e of store.values()) {
    if (e.model === 'Grant' && e.payload.accountId === sub) grantIds.add(e.id);
  }
  let n = 0;
  for (const [key, e] of store) {
    const p = e.payload;
    if (p.accountId === sub || (p.grantId && grantIds.has(p.grantId))
      || (e.model === 'Interaction' && p.session?.accountId === sub)) {
      store.delete(key);
      n += 1;
    }
  }
  return n;
}

// ---- accounts -------------------------------------------------------------

async function findAccount(_ctx, id) {
  const sub = String(id);
  return {
    accountId: sub,
    async claims() {
      const claims = {
        sub,
        email: sub.includes('@') ? sub : `${sub}@example.com`,
        email_verified: true,
        name: sub,
        preferred_username: sub,
        groups: [...(groups.get(sub) ?? [])],
      };
      for (const [k, v] of Object.entries(accounts.get(sub) ?? {})) {
        if (v === null) delete claims[k];
        else claims[k] = structuredClone(v);
      }
      return claims;
    },
  };
}

// ---- keys -----------------------------------------------------------------

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `test-${randomUUID()}`,
  alg: 'RS256',
  use: 'sig',
};

// Replaces claims of a JWS that oidc-provider signed with signingKey and signs it again.
function resignJwt(jwt, claims) {
  const parts = jwt.split('.');
  const header = JSON.parse(Buffer.from(parts[0], 'base64url'));
  if (parts.length !== 3 || header.alg !== 'RS256' || header.kid !== signingKey.kid) {
    throw new Error(`cannot tamper with this JWT (alg ${header.alg}, ${parts.length} parts)`);
  }
  const payload = { ...JSON.parse(Buffer.from(parts[1], 'base64url')), ...claims };
  const input = `${parts[0]}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  const sig = cryptoSign('sha256', Buffer.from(input), privateKey).toString('base64url');
  return `${input}.${sig}`;
}

// ---- admin + down switch --------------------------------------------------

let down = false; // false | '503' | 'close'

function sendJson(res, status, body) {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 1 << 20) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function adminAuthorized(req) {
  const h = req.headers.authorization || '';
  const m = /^Bearer\s+(.+)$/i.exec(h);
  if (!m) return false;
  const a = Buffer.from(m[1].trim());
  const b = Buffer.from(ADMIN_TOKEN);
  return a.length === b.length && timingSafeEqual(a, b);
}

async function handleAdmin(req, res, url) {
  if (!ADMIN_TOKEN) return sendJson(res, 404, { error: 'not_found', error_description: 'OIDC_ADMIN_TOKEN is not set' });
  if (!adminAuthorized(req)) return sendJson(res, 401, { error: 'unauthorized' });

  const route = `${req.method} ${url.pathname}`;
  let body = {};
  if (req.method === 'POST') {
    const text = await readBody(req);
    if (text.trim()) {
      try {
        body = JSON.parse(text);
      } catch {
        return sendJson(res, 400, { error: 'invalid_request', error_description: 'body must be JSON' });
      }
    }
  }

  switch (route) {
    case 'POST /__admin/revoke': {
      const sub = url.searchParams.get('sub') ?? body.sub;
      if (!sub) return sendJson(res, 400, { error: 'invalid_request', error_description: 'sub missing' });
      const revoked = revokeAccount(String(sub));
      console.error(`provider.mjs: admin: revoked ${revoked} objects of ${sub}`);
      return sendJson(res, 200, { revoked });
    }
    case 'POST /__admin/groups': {
      const { sub } = body;
      if (typeof sub !== 'string' || !Array.isArray(body.groups)) {
        return sendJson(res, 400, { error: 'invalid_request', error_description: 'want {"sub":"...","groups":[...]}' });
      }
      groups.set(sub, body.groups.map(String));
      // the latest setting wins: drop a groups override from OIDC_ACCOUNTS / /__admin/account
      if (accounts.get(sub) && 'groups' in accounts.get(sub)) delete accounts.get(sub).groups;
      console.error(`provider.mjs: admin: groups of ${sub} = ${JSON.stringify(groups.get(sub))}`);
      return sendJson(res, 200, { sub, groups: groups.get(sub) });
    }
    case 'POST /__admin/account': {
      const { sub, claims } = body ?? {};
      if (typeof sub !== 'string' || !sub) {
        return sendJson(res, 400, { error: 'invalid_request', error_description: 'want {"sub":"...","claims":{...}}' });
      }
      try {
        accounts.set(sub, checkOverrides(sub, claims));
      } catch (e) {
        return sendJson(res, 400, { error: 'invalid_request', error_description: e.message });
      }
      console.error(`provider.mjs: admin: claims of ${sub} = ${JSON.stringify(accounts.get(sub))}`);
      return sendJson(res, 200, { sub, claims: accounts.get(sub) });
    }
    case 'POST /__admin/tamper': {
      if (body === null || typeof body !== 'object' || Array.isArray(body)) {
        return sendJson(res, 400, { error: 'invalid_request', error_description: 'body must be a JSON object' });
      }
      for (const [k, v] of Object.entries(body)) {
        if (k !== 'idTokenAudience') {
          return sendJson(res, 400, { error: 'invalid_request', error_description: `unknown tamper switch ${JSON.stringify(k)} (known: idTokenAudience)` });
        }
        const ok = v === null || (typeof v === 'string' && v !== '')
          || (Array.isArray(v) && v.length > 0 && v.every((a) => typeof a === 'string'));
        if (!ok) {
          return sendJson(res, 400, { error: 'invalid_request', error_description: 'idTokenAudience must be a non-empty string, an array of strings, or null' });
        }
      }
      Object.assign(tamper, body);
      console.error(`provider.mjs: admin: tamper ${JSON.stringify(tamper)}`);
      return sendJson(res, 200, { tamper });
    }
    case 'POST /__admin/down': {
      const mode = url.searchParams.get('mode') ?? body.mode ?? '503';
      if (!['503', 'close'].includes(mode)) {
        return sendJson(res, 400, { error: 'invalid_request', error_description: 'mode must be 503 or close' });
      }
      down = mode;
      console.error(`provider.mjs: admin: down (${mode})`);
      return sendJson(res, 200, { down });
    }
    case 'POST /__admin/up':
      down = false;
      console.error('provider.mjs: admin: up');
      return sendJson(res, 200, { down });
    case 'GET /__admin/state':
      return sendJson(res, 200, {
        down,
        groups: Object.fromEntries(groups),
        accounts: Object.fromEntries(accounts),
        tamper,
        clockOffset: CLOCK_OFFSET,
      });
    default:
      return sendJson(res, 404, { error: 'not_found' });
  }
}

// ---- server ---------------------------------------------------------------

let oidcHandler = null;

// OIDC_TLS_CERT / OIDC_TLS_KEY (PEM files): serve HTTPS, issuer https://127.0.0.1:PORT.
const TLS_CERT = process.env.OIDC_TLS_CERT || '';
const TLS_KEY = process.env.OIDC_TLS_KEY || '';

const handle = (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (DEBUG) {
    res.on('finish', () => console.error(`provider.mjs: ${req.method} ${req.url} -> ${res.statusCode}`));
  }
  if (url.pathname.startsWith('/__admin/')) {
    handleAdmin(req, res, url).catch((err) => {
      console.error('provider.mjs: admin error:', err);
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    });
    return;
  }
  if (down === 'close') {
    req.socket.destroy();
    return;
  }
  if (down) {
    res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', connection: 'close' });
    res.end('503 Service Unavailable (test provider is down)\n');
    return;
  }
  if (!oidcHandler) {
    res.writeHead(503, { 'content-type': 'text/plain' });
    res.end('starting\n');
    return;
  }
  if (CLOCK_OFFSET_MS) {
    // Node writes the head through res.writeHead (also implicitly, from end()),
    // after oidc-provider has finished editing its Set-Cookie list.
    const { writeHead } = res;
    res.writeHead = function writeHeadRealCookies(...args) {
      const sc = this.getHeader('set-cookie');
      if (sc !== undefined) this.setHeader('set-cookie', [].concat(sc).map(String).map(realCookieExpiry));
      return writeHead.apply(this, args);
    };
  }
  oidcHandler(req, res);
};

const server = TLS_CERT
  ? https.createServer({ cert: readFileSync(TLS_CERT), key: readFileSync(TLS_KEY) }, handle)
  : http.createServer(handle);

function shutdown(signal) {
  if (DEBUG) console.error(`provider.mjs: ${signal}, exiting`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGHUP', () => shutdown('SIGHUP'));
// A closed stdout (the test stopped reading) must not kill us with EPIPE.
process.stdout.on('error', () => {});

server.on('error', (err) => {
  console.error(`provider.mjs: cannot listen on 127.0.0.1:${PORT}: ${err.message}`);
  process.exit(1);
});

server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `${TLS_CERT ? 'https' : 'http'}://127.0.0.1:${port}`;

  // oidc-provider shows the consent page on every authorization of a "native"
  // client; we use native only for its loopback-port leniency, so drop that.
  const policy = interactionPolicy.base();
  policy.get('consent').checks.remove('native_client_prompt');

  const provider = new Provider(issuer, {
    adapter: TestAdapter,
    interactions: { policy },
    findAccount,
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    clients: [
      {
        client_id: CLIENT_ID,
        ...(CLIENT_SECRET === ''
          ? { token_endpoint_auth_method: 'none' }
          : { client_secret: CLIENT_SECRET, token_endpoint_auth_method: 'client_secret_basic' }),
        application_type: APPLICATION_TYPE,
        redirect_uris: REDIRECT_URIS,
        post_logout_redirect_uris: REDIRECT_URIS,
        grant_types: NO_REFRESH ? ['authorization_code'] : ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
    ],
    scopes: NO_REFRESH
      ? ['openid', 'email', 'profile', 'groups']
      : ['openid', 'email', 'profile', 'groups', 'offline_access'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      userinfo: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: false },
      resourceIndicators: { enabled: false },
      rpInitiatedLogout: { enabled: true },
    },
    async issueRefreshToken(_ctx, client, code) {
      return !NO_REFRESH && client.grantTypeAllowed('refresh_token')
        && (env.OIDC_REFRESH_TOKENS === 'always' || code.scopes.has('offline_access'));
    },
    ...(env.OIDC_ROTATE_REFRESH_TOKEN === '1' || env.OIDC_ROTATE_REFRESH_TOKEN === '0'
      ? { rotateRefreshToken: () => env.OIDC_ROTATE_REFRESH_TOKEN === '1' }
      : {}),
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: ID_TOKEN_TTL,
      RefreshToken: REFRESH_TOKEN_TTL,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    // Error pages/objects: plain, without the default page's web font link.
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>oops! something went wrong</title></head><body>${
        Object.entries(out).map(([k, v]) => `<pre><strong>${k}</strong>: ${String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)}</pre>`).join('')
      }</body></html>`;
    },
  });

  // /__admin/tamper idTokenAudience: oidc-provider always signs ID tokens with
  // aud = client_id (no hook for it), so re-sign its result with our key.
  const { issue } = provider.IdToken.prototype;
  provider.IdToken.prototype.issue = async function issueTampered(options = {}, ...rest) {
    const jwt = await issue.call(this, options, ...rest);
    if (options?.use !== 'idtoken' || tamper.idTokenAudience == null) return jwt;
    return resignJwt(jwt, { aud: tamper.idTokenAudience });
  };

  provider.on('server_error', (_ctx, err) => console.error('provider.mjs: server_error:', err));
  if (DEBUG) {
    for (const ev of ['authorization.error', 'grant.error', 'userinfo.error', 'revocation.error', 'end_session.error']) {
      provider.on(ev, (_ctx, err) => console.error(`provider.mjs: ${ev}: ${err.message} ${err.error_description ?? ''}`));
    }
  }

  oidcHandler = provider.callback();
  process.stdout.write(`OIDC_ISSUER=${issuer}\n`);

  if (env.OIDC_WATCH_PARENT !== '0') {
    const ppid = process.ppid;
    setInterval(() => {
      if (process.ppid !== ppid) {
        console.error('provider.mjs: parent process is gone, exiting');
        shutdown('parent exit');
      }
    }, 1000).unref();
  }
});
