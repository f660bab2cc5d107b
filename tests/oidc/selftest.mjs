#!/usr/bin/env node
// Self-test of provider.mjs: starts it, then plays a browser (the headless walk
// documented at the top of provider.mjs, with a cookie jar keyed by name only)
// and an OpenID relying party (openid-client) against it:
//   discovery, authorization code + PKCE with login and consent forms, code
//   exchange (client_secret_post), ID token claims, userinfo, refresh
//   (client_secret_basic), single sign-on on a second login, /__admin/groups,
//   /__admin/revoke, /__admin/down + /__admin/up (503 and close), public
//   client, SIGTERM, OIDC_ACCOUNTS (claim overrides; an account with only
//   sub), /__admin/account, /__admin/tamper (ID token aud), OIDC_CLOCK_OFFSET
//   (-7200: ID token already expired, flow still works; +7200).
// Exits 0 when everything works.  Run: node tests/oidc/selftest.mjs

import { spawn } from 'node:child_process';
import { strict as assert } from 'node:assert';
import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as client from 'openid-client';

const PROVIDER = fileURLToPath(new URL('./provider.mjs', import.meta.url));
const ADMIN = 'selftest-admin-token';
const CLIENT_ID = 'infra-test';
const SECRET = 'infra-test-secret';
const REDIRECT = 'http://127.0.0.1/callback';
const SCOPE = 'openid email profile groups offline_access';

const children = new Set();

async function startProvider(extraEnv = {}) {
  const child = spawn(process.execPath, [PROVIDER], {
    env: {
      ...process.env,
      OIDC_CLIENT_ID: CLIENT_ID,
      OIDC_CLIENT_SECRET: SECRET,
      OIDC_REDIRECT_URIS: `${REDIRECT},http://localhost:8301`,
      OIDC_GROUPS: JSON.stringify({ alice: ['dev', 'ops'] }),
      OIDC_ADMIN_TOKEN: ADMIN,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const lines = createInterface({ input: child.stdout });
  const first = await Promise.race([
    new Promise((resolve) => { lines.once('line', resolve); }),
    once(child, 'exit').then(([code]) => { throw new Error(`provider exited with ${code}`); }),
    new Promise((_, reject) => { setTimeout(() => reject(new Error('provider did not start in 20 s')), 20000).unref(); }),
  ]);
  const m = /^OIDC_ISSUER=(http:\/\/127\.0\.0\.1:\d+)$/.exec(first);
  assert(m, `unexpected first stdout line: ${first}`);
  let extra = '';
  lines.on('line', (l) => { extra += `${l}\n`; });
  return { child, issuer: m[1], extraStdout: () => extra };
}

// ---- a browser: cookie jar keyed by name, manual redirects ---------------

class Browser {
  jar = new Map();

  cookieHeader() {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  absorb(res) {
    for (const sc of res.headers.getSetCookie()) {
      const [pair, ...attrs] = sc.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => {
        const [k, v] = a.split('=').map((x) => x?.trim());
        if (/^max-age$/i.test(k)) return Number(v) <= 0;
        if (/^expires$/i.test(k)) return Date.parse(v) <= Date.now();
        return false;
      });
      if (!value || expired) this.jar.delete(name);
      else this.jar.set(name, value);
    }
  }

  async request(url, { method = 'GET', form } = {}) {
    const headers = { cookie: this.cookieHeader() };
    let body;
    if (form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(form).toString();
    }
    const res = await fetch(url, { method, headers, body, redirect: 'manual' });
    this.absorb(res);
    return res;
  }

  // The generic loop from provider.mjs's header. Returns the final redirect
  // URL (to redirect_uri) and the list of pages seen.
  async authorize(startUrl, login, redirectUri) {
    let url = new URL(startUrl);
    const pages = [];
    for (let i = 0; i < 20; i += 1) {
      const res = await this.request(url);
      if (res.status >= 300 && res.status < 400) {
        const next = new URL(res.headers.get('location'), url);
        await res.arrayBuffer();
        if (next.href.startsWith(redirectUri)) return { redirect: next, pages };
        url = next;
        continue;
      }
      const html = await res.text();
      assert.equal(res.status, 200, `GET ${url} -> ${res.status}: ${html}`);
      assert.match(url.pathname, /^\/interaction\/[^/]+$/, `unexpected page ${url}`);
      const action = /<form[^>]*action="([^"]+)"[^>]*method="post"/.exec(html)?.[1];
      assert(action, `no form in ${html}`);
      const target = new URL(action.replace(/&amp;/g, '&'), url);
      assert.equal(target.pathname, url.pathname, 'the form posts back to the interaction URL');
      let form;
      if (/name="login"/.test(html)) {
        pages.push('login');
        form = { prompt: 'login', login, password: 'x' };
      } else {
        assert.match(html, /name="prompt" value="consent"/);
        pages.push('consent');
        form = { prompt: 'consent' };
      }
      const post = await this.request(target, { method: 'POST', form });
      const posted = await post.text();
      assert.equal(post.status, 303, `POST ${target} -> ${post.status}: ${posted}`);
      url = new URL(post.headers.get('location'), target);
      assert.match(url.pathname, /^\/auth\/[^/]+$/);
    }
    throw new Error('too many steps');
  }
}

async function admin(issuer, path, body, token = ADMIN) {
  const res = await fetch(`${issuer}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

function config(issuer, auth, secret = SECRET) {
  return client.discovery(new URL(issuer), CLIENT_ID, secret ? { client_secret: secret } : {}, auth, {
    execute: [client.allowInsecureRequests],
  });
}

// The browser part of a login: up to the redirect with the code.
async function authorizeCode(browser, cfg, who, redirectUri = 'http://127.0.0.1:45678/callback', extra = { prompt: 'consent' }) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(cfg, {
    redirect_uri: redirectUri,
    scope: SCOPE,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    ...extra,
  });
  const { redirect, pages } = await browser.authorize(url, who, redirectUri);
  assert.equal(redirect.searchParams.get('state'), state);
  assert(redirect.searchParams.get('code'), `no code in ${redirect}`);
  assert.equal(redirect.searchParams.get('iss'), cfg.serverMetadata().issuer);
  return { redirect, pages, verifier, state, nonce, redirectUri };
}

async function login(browser, cfg, who, redirectUri = 'http://127.0.0.1:45678/callback', extra = { prompt: 'consent' }) {
  const { redirect, pages, verifier, state, nonce } = await authorizeCode(browser, cfg, who, redirectUri, extra);
  const tokens = await client.authorizationCodeGrant(cfg, redirect, {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  return { tokens, pages, redirect };
}

// Plain token request (client_secret_post), without openid-client's ID token
// checks, for tokens a relying party must refuse.
async function tokenRequest(cfg, params) {
  const res = await fetch(cfg.serverMetadata().token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ ...params, client_id: CLIENT_ID, client_secret: SECRET }),
  });
  const json = await res.json();
  assert.equal(res.status, 200, `token request: ${JSON.stringify(json)}`);
  return json;
}

// Login with a plain code exchange. Returns the token response.
async function rawLogin(browser, cfg, who, extra = { prompt: 'consent' }) {
  const { redirect, verifier, redirectUri } = await authorizeCode(browser, cfg, who, undefined, extra);
  return tokenRequest(cfg, {
    grant_type: 'authorization_code',
    code: redirect.searchParams.get('code'),
    redirect_uri: redirectUri,
    code_verifier: verifier,
  });
}

// Decodes a JWS and checks its RS256 signature against the provider's JWKS.
async function verifiedJwt(cfg, jwt) {
  const [h, p, sig] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  assert.equal(header.alg, 'RS256');
  const { keys } = await (await fetch(cfg.serverMetadata().jwks_uri)).json();
  const jwk = keys.find((k) => k.kid === header.kid);
  assert(jwk, `no key ${header.kid} in the JWKS`);
  const ok = cryptoVerify('sha256', Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(sig, 'base64url'));
  assert(ok, 'ID token signature verifies with the JWKS key');
  return JSON.parse(Buffer.from(p, 'base64url'));
}

const nowSec = () => Math.floor(Date.now() / 1000);
const JWT_CLAIMS = ['iss', 'aud', 'exp', 'iat', 'auth_time', 'nonce', 'at_hash', 'c_hash', 'sid', 'acr', 'amr', 'azp', 'jti'];
const personal = (claims) => Object.keys(claims).filter((k) => !JWT_CLAIMS.includes(k)).sort();

function step(name) {
  console.error(`selftest: ${name}`);
}

async function main() {
  const { child, issuer, extraStdout } = await startProvider({
    OIDC_GROUPS: JSON.stringify({ alice: ['dev', 'ops'], carol: ['x'] }),
    OIDC_ACCOUNTS: JSON.stringify({
      nameless: { name: null, email: null, email_verified: null, preferred_username: null, groups: null },
      carol: { email: 'carol@corp.example', groups: ['a'] },
    }),
  });
  step(`provider at ${issuer}`);

  // discovery document
  const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  for (const k of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'userinfo_endpoint']) {
    assert(disco[k], `discovery lacks ${k}`);
  }
  for (const s of ['openid', 'email', 'profile', 'groups', 'offline_access']) {
    assert(disco.scopes_supported.includes(s), `scopes_supported lacks ${s}`);
  }
  assert.equal(disco.issuer, issuer);

  const post = await config(issuer, client.ClientSecretPost(SECRET));
  const basic = await config(issuer, client.ClientSecretBasic(SECRET));

  // PKCE is required
  {
    const url = client.buildAuthorizationUrl(post, {
      redirect_uri: REDIRECT, scope: 'openid', state: 'nopkce',
    });
    const res = await fetch(url, { redirect: 'manual' });
    const loc = new URL(res.headers.get('location'));
    assert.equal(loc.searchParams.get('error'), 'invalid_request', `no-PKCE request: ${loc}`);
    assert.match(loc.searchParams.get('error_description'), /PKCE/);
    step('authorization request without PKCE is refused');
  }

  // unregistered redirect_uri is refused (error page, no redirect)
  {
    const url = client.buildAuthorizationUrl(post, {
      redirect_uri: 'http://127.0.0.1:1234/elsewhere', scope: 'openid', state: 's',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    const res = await fetch(url, { redirect: 'manual' });
    assert.equal(res.status, 400);
    assert.match(await res.text(), /redirect_uri did not match/);
    step('unregistered redirect_uri is refused');
  }

  // first login: login page + consent page, code exchanged with client_secret_post
  const browser = new Browser();
  const first = await login(browser, post, 'alice');
  assert.deepEqual(first.pages, ['login', 'consent']);
  const t1 = first.tokens;
  assert(t1.access_token && t1.id_token && t1.refresh_token, 'access, ID and refresh tokens');
  assert.equal(t1.token_type.toLowerCase(), 'bearer');
  const c1 = t1.claims();
  assert.equal(c1.sub, 'alice');
  assert.equal(c1.email, 'alice@example.com');
  assert.equal(c1.email_verified, true);
  assert.equal(c1.name, 'alice');
  assert.equal(c1.preferred_username, 'alice');
  assert.deepEqual(c1.groups, ['dev', 'ops']);
  assert.equal(c1.aud, CLIENT_ID);
  assert.equal(c1.iss, issuer);
  step('login + consent -> code -> tokens (client_secret_post); ID token claims ok');

  // userinfo
  const ui = await client.fetchUserInfo(post, t1.access_token, 'alice');
  assert.equal(ui.email, 'alice@example.com');
  assert.deepEqual(ui.groups, ['dev', 'ops']);
  step('userinfo ok');

  // refresh with client_secret_basic
  const r1 = await client.refreshTokenGrant(basic, t1.refresh_token);
  assert(r1.access_token && r1.id_token);
  assert.equal(r1.claims().sub, 'alice');
  const rt = r1.refresh_token ?? t1.refresh_token;
  step('refresh (client_secret_basic) ok');

  // wrong secret is refused, with basic and post
  for (const auth of [client.ClientSecretBasic('wrong'), client.ClientSecretPost('wrong')]) {
    const bad = await config(issuer, auth, 'wrong');
    await assert.rejects(client.refreshTokenGrant(bad, rt), (e) => e.status === 401 && JSON.stringify(e.cause).includes('invalid_client'));
  }
  step('wrong client secret refused');

  // second login in the same browser: SSO, no login page; prompt=consent
  // always shows the consent page
  const second = await login(browser, post, 'alice');
  assert.deepEqual(second.pages, ['consent']);
  assert(second.tokens.refresh_token);
  // without prompt=consent: no page at all, but no refresh token either
  // (oidc-provider drops offline_access from requests without prompt=consent)
  const third = await login(browser, post, 'alice', undefined, {});
  assert.deepEqual(third.pages, []);
  assert.equal(third.tokens.refresh_token, undefined);
  step('second login in the same browser: no login page; no refresh token without prompt=consent');

  // a login in a new browser as someone without groups, email as login name
  // registered as http://localhost:8301 (no path): http://localhost:8301/ works too
  const bob = await login(new Browser(), basic, 'bob@corp.test', 'http://localhost:8301/');
  assert.equal(bob.tokens.claims().email, 'bob@corp.test');
  assert.deepEqual(bob.tokens.claims().groups, []);
  step('other account, other redirect_uri (client_secret_basic code exchange) ok');

  // admin auth
  for (const path of ['/__admin/up', '/__admin/tamper', '/__admin/account']) {
    assert.equal((await admin(issuer, path, {}, 'nope')).status, 401);
  }

  // OIDC_ACCOUNTS: a null removes a claim; only sub is left
  {
    const n = await login(new Browser(), post, 'nameless');
    assert.deepEqual(personal(n.tokens.claims()), ['sub']);
    assert.deepEqual(await client.fetchUserInfo(post, n.tokens.access_token, 'nameless'), { sub: 'nameless' });
    // overrides win over OIDC_GROUPS
    const c = await login(new Browser(), post, 'carol');
    const cc = c.tokens.claims();
    assert.equal(cc.email, 'carol@corp.example');
    assert.equal(cc.name, 'carol');
    assert.deepEqual(cc.groups, ['a']);
    const cu = await client.fetchUserInfo(post, c.tokens.access_token, 'carol');
    assert.equal(cu.email, 'carol@corp.example');
    assert.deepEqual(cu.groups, ['a']);
    // /__admin/groups: the latest setting wins over the OIDC_ACCOUNTS groups
    assert.equal((await admin(issuer, '/__admin/groups', { sub: 'carol', groups: ['b'] })).status, 200);
    assert.deepEqual((await client.fetchUserInfo(post, c.tokens.access_token, 'carol')).groups, ['b']);
    assert.equal((await client.fetchUserInfo(post, c.tokens.access_token, 'carol')).email, 'carol@corp.example');
    step('OIDC_ACCOUNTS: nameless has only sub (ID token, userinfo); carol overrides win over OIDC_GROUPS');

    // /__admin/account at runtime: replaces that account's overrides
    const d = await login(new Browser(), post, 'dave');
    assert.equal(d.tokens.claims().email, 'dave@example.com');
    let a = await admin(issuer, '/__admin/account', {
      sub: 'dave', claims: { name: null, email: null, email_verified: null, preferred_username: null },
    });
    assert.equal(a.status, 200, JSON.stringify(a.json));
    assert.deepEqual(await client.fetchUserInfo(post, d.tokens.access_token, 'dave'), { sub: 'dave', groups: [] });
    a = await admin(issuer, '/__admin/account', { sub: 'dave', claims: { name: 'Dave D', email_verified: false } });
    assert.equal(a.status, 200);
    const du = await client.fetchUserInfo(post, d.tokens.access_token, 'dave');
    assert.equal(du.name, 'Dave D');
    assert.equal(du.email, 'dave@example.com');
    assert.equal(du.email_verified, false);
    const d2 = await login(new Browser(), post, 'dave');
    assert.equal(d2.tokens.claims().name, 'Dave D');
    assert.equal((await admin(issuer, '/__admin/account', { sub: 'dave', claims: { sub: 'x' } })).status, 400);
    assert.equal((await admin(issuer, '/__admin/account', { sub: 'dave', claims: { nickname: 'x' } })).status, 400);
    assert.equal((await admin(issuer, '/__admin/account', { sub: 'dave' })).status, 400);
    assert.equal((await admin(issuer, '/__admin/account', { sub: 'dave', claims: {} })).status, 200);
    assert.equal((await client.fetchUserInfo(post, d.tokens.access_token, 'dave')).name, 'dave');
    step('/__admin/account: userinfo and later ID tokens see the new claims; bad requests refused');
  }

  // tamper: ID tokens with another audience, still signed by the provider
  {
    assert.equal((await admin(issuer, '/__admin/tamper', { idTokenAlg: 'none' })).status, 400);
    assert.equal((await admin(issuer, '/__admin/tamper', { idTokenAudience: 5 })).status, 400);
    const t = await admin(issuer, '/__admin/tamper', { idTokenAudience: 'someone-else' });
    assert.equal(t.status, 200);
    assert.deepEqual(t.json, { tamper: { idTokenAudience: 'someone-else' } });
    const tk = await rawLogin(new Browser(), post, 'alice');
    const claims = await verifiedJwt(post, tk.id_token);
    assert.equal(claims.aud, 'someone-else');
    assert.equal(claims.iss, issuer);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.email, 'alice@example.com');
    // refreshes too; an RP refuses those tokens
    const rf = await tokenRequest(post, { grant_type: 'refresh_token', refresh_token: tk.refresh_token });
    assert.equal((await verifiedJwt(post, rf.id_token)).aud, 'someone-else');
    await assert.rejects(login(new Browser(), post, 'alice'), (e) => /"aud"/.test(e.cause?.message));
    assert.deepEqual((await (await fetch(`${issuer}/__admin/state`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()).tamper,
      { idTokenAudience: 'someone-else' });
    assert.equal((await admin(issuer, '/__admin/tamper', { idTokenAudience: [CLIENT_ID, 'other'] })).status, 200);
    const arr = await rawLogin(new Browser(), post, 'alice');
    assert.deepEqual((await verifiedJwt(post, arr.id_token)).aud, [CLIENT_ID, 'other']);
    assert.equal((await admin(issuer, '/__admin/tamper', { idTokenAudience: null })).status, 200);
    const back = await login(new Browser(), post, 'alice');
    assert.equal(back.tokens.claims().aud, CLIENT_ID);
    step('/__admin/tamper idTokenAudience: signed ID tokens (code and refresh) with aud someone-else; null turns it off');
  }

  // groups change at runtime
  const g = await admin(issuer, '/__admin/groups', { sub: 'alice', groups: ['admins'] });
  assert.equal(g.status, 200);
  assert.deepEqual((await client.fetchUserInfo(post, t1.access_token, 'alice')).groups, ['admins']);
  const r2 = await client.refreshTokenGrant(post, rt);
  assert.deepEqual(r2.claims().groups, ['admins']);
  step('/__admin/groups: userinfo and refreshed ID token see the new groups');

  // down / up
  assert.equal((await admin(issuer, '/__admin/down')).status, 200);
  {
    const res = await fetch(`${issuer}/.well-known/openid-configuration`);
    assert.equal(res.status, 503);
    await res.arrayBuffer();
    await assert.rejects(client.refreshTokenGrant(post, rt));
  }
  assert.equal((await admin(issuer, '/__admin/down?mode=close')).status, 200);
  await assert.rejects(fetch(`${issuer}/.well-known/openid-configuration`));
  assert.equal((await admin(issuer, '/__admin/up')).status, 200);
  assert.equal((await fetch(`${issuer}/.well-known/openid-configuration`)).status, 200);
  const r3 = await client.refreshTokenGrant(post, r2.refresh_token ?? rt);
  step('/__admin/down (503, close) and /__admin/up ok');

  // revoke: tokens and the session are gone, bob's are not
  const rv = await admin(issuer, '/__admin/revoke?sub=alice');
  assert.equal(rv.status, 200);
  assert(rv.json.revoked > 0);
  await assert.rejects(
    client.refreshTokenGrant(post, r3.refresh_token ?? rt),
    (e) => e.error === 'invalid_grant',
  );
  await assert.rejects(client.fetchUserInfo(post, r3.access_token, 'alice'));
  await client.refreshTokenGrant(post, bob.tokens.refresh_token);
  const again = await login(browser, post, 'alice');
  assert.deepEqual(again.pages, ['login', 'consent']);
  step('/__admin/revoke: refresh -> invalid_grant, userinfo refused, login page again; others unaffected');

  assert.equal(extraStdout(), '', 'nothing else on stdout');

  child.kill('SIGTERM');
  const [code, signal] = await once(child, 'exit');
  assert.equal(code, 0, `exit code ${code} signal ${signal}`);
  step('SIGTERM -> exit 0');

  // public client, web application type, rotation always, short access tokens
  const pub = await startProvider({
    OIDC_CLIENT_SECRET: '',
    OIDC_APPLICATION_TYPE: 'web',
    OIDC_REDIRECT_URIS: 'http://127.0.0.1:45678/callback',
    OIDC_ROTATE_REFRESH_TOKEN: '1',
    OIDC_ACCESS_TOKEN_TTL: '2',
    OIDC_REFRESH_TOKENS: 'always',
  });
  const pcfg = await client.discovery(new URL(pub.issuer), CLIENT_ID, {}, client.None(), {
    execute: [client.allowInsecureRequests],
  });
  const p = await login(new Browser(), pcfg, 'carol', 'http://127.0.0.1:45678/callback', {});
  assert.deepEqual(p.pages, ['login', 'consent']);
  assert.equal(p.tokens.expires_in, 2);
  assert(p.tokens.refresh_token, 'OIDC_REFRESH_TOKENS=always: refresh token without prompt=consent');
  const pr = await client.refreshTokenGrant(pcfg, p.tokens.refresh_token);
  assert(pr.refresh_token && pr.refresh_token !== p.tokens.refresh_token, 'rotated');
  await assert.rejects(client.refreshTokenGrant(pcfg, p.tokens.refresh_token));
  step('public client, exact redirect_uri, OIDC_REFRESH_TOKENS=always, rotation, OIDC_ACCESS_TOKEN_TTL ok');
  pub.child.kill('SIGINT');
  assert.equal((await once(pub.child, 'exit'))[0], 0);

  // OIDC_CLOCK_OFFSET: a provider two hours behind. The whole flow works
  // (interaction cookies keep real-time expiry dates), but the ID token it
  // issues is already expired; the provider itself still accepts its tokens.
  {
    const sk = await startProvider({ OIDC_CLOCK_OFFSET: '-7200' });
    const scfg = await config(sk.issuer, client.ClientSecretPost(SECRET));
    const before = nowSec();
    const skb = new Browser();
    // max_age: auth_time is in the ID token only when asked for
    const tk = await rawLogin(skb, scfg, 'alice', { prompt: 'consent', max_age: '600' });
    const after = nowSec();
    const c = await verifiedJwt(scfg, tk.id_token);
    assert(c.exp < before, `exp ${c.exp} is in the past (now ${before})`);
    assert.equal(c.exp - c.iat, 3600);
    assert(c.iat >= before - 7200 - 1 && c.iat <= after - 7200 + 1, `iat ${c.iat} ~ now - 7200`);
    assert(c.auth_time >= before - 7200 - 1 && c.auth_time <= after - 7200 + 1, `auth_time ${c.auth_time} ~ now - 7200`);
    assert.equal(tk.expires_in, 3600);
    assert(tk.refresh_token);
    // the provider lives in its own time: userinfo and refresh work
    assert.equal((await client.fetchUserInfo(scfg, tk.access_token, 'alice')).sub, 'alice');
    const rf = await tokenRequest(scfg, { grant_type: 'refresh_token', refresh_token: tk.refresh_token });
    assert((await verifiedJwt(scfg, rf.id_token)).exp < nowSec());
    // a relying party refuses the ID token
    await assert.rejects(login(new Browser(), scfg, 'alice'), (e) => /"exp"/.test(e.cause?.message));
    // the session cookie is still valid in real time: SSO works
    const sso = await authorizeCode(skb, scfg, 'alice');
    assert.deepEqual(sso.pages, ['consent']);
    step('OIDC_CLOCK_OFFSET=-7200: flow works, ID token exp/iat/auth_time shifted (already expired), userinfo + refresh ok');
    sk.child.kill('SIGTERM');
    assert.equal((await once(sk.child, 'exit'))[0], 0);

    const ahead = await startProvider({ OIDC_CLOCK_OFFSET: '7200', OIDC_ID_TOKEN_TTL: '60' });
    const acfg = await config(ahead.issuer, client.ClientSecretPost(SECRET));
    const t0 = nowSec();
    const at = await rawLogin(new Browser(), acfg, 'alice');
    const ac = await verifiedJwt(acfg, at.id_token);
    assert(ac.iat >= t0 + 7200 - 1 && ac.iat <= nowSec() + 7200 + 1, `iat ${ac.iat} ~ now + 7200`);
    assert.equal(ac.exp - ac.iat, 60);
    step('OIDC_CLOCK_OFFSET=7200: codes still redeemable, ID token iat in the future');
    ahead.child.kill('SIGTERM');
    assert.equal((await once(ahead.child, 'exit'))[0], 0);
  }

  console.error('selftest: all passed');
}

main().then(() => process.exit(0), (err) => {
  console.error('selftest: FAILED:', err);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
});
