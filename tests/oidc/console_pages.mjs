#!/usr/bin/env node
// The web console (`infra server` /ui) in a real, headless Chromium: signed
// in through the test OpenID provider as an admin and with a local password
// as a plain user; every admin page adds, shows and removes its resource;
// CSRF, sign-out and key revocation are played; every page is checked for
// console errors, CSP violations and (axe-core) serious or critical
// accessibility problems, and photographed.
//
//   node tests/oidc/console_pages.mjs
//
// Environment:
//   BASE            https://127.0.0.1:PORT (the server)
//   BASE_ALT        the same server under another name (https://localhost:PORT):
//                   the admin's sign-in starts there and ends at BASE
//   ADMIN_LOGIN     the provider login of an infra admin (its group is granted admin)
//   ADMIN_NAME      that person's infra user name (e.g. alice@example.com)
//   PROVIDER        the provider's name at the server (its sign-in link)
//   IDP_ISSUER      the provider's issuer (to add a second provider, and an identity's issuer)
//   PLAIN_USER, PLAIN_PASSWORD  a local user who is not an admin (has a grant on DESTINATION)
//   DESTINATION     a destination that exists; SCRATCH a second one to remove
//   OUT_DIR         where the screenshots go (created)
//   CHROMIUM        the browser; default /usr/bin/chromium
//
// Prints one JSON line: {"ok":true,"screenshots":[...],"pages":N} or
// {"ok":false,"error":"...","problems":[...]} (exit status 1).

import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const BASE = env.BASE;
const OUT = env.OUT_DIR || '/tmp/infra-console';
mkdirSync(OUT, { recursive: true });
const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const problems = [];
// Pages asked for with a status other than 200 (the browser logs those).
const expected = new Map();
const shots = [];
let pages = 0;
let browser;
let current;

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function newPage(name) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    // The provider's own pages are not ours to judge.
    if (!page.url().startsWith(BASE)) return;
    const want = expected.get(page.url());
    if (want && m.text().includes(`status of ${want}`)) return;
    if (m.type() === 'error' || /Content.Security.Policy|Refused to/i.test(m.text())) {
      problems.push(`${name} ${page.url()}: ${m.type()}: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`${name} ${page.url()}: page error: ${e.message}`));
  return page;
}

/// Looks at the page: its policy, its accessibility, a screenshot.
async function inspect(page, resp, shot) {
  current = page;
  pages += 1;
  if (resp) {
    const csp = resp.headers()['content-security-policy'] || '';
    check(csp.includes("frame-ancestors 'none'"), `${page.url()}: CSP ${csp}`);
    check(!csp.includes('unsafe-inline'), `${page.url()}: CSP allows unsafe-inline: ${csp}`);
    check(resp.headers()['x-frame-options'] === 'DENY', `${page.url()}: no X-Frame-Options`);
  }
  await page.evaluate(AXE);
  const res = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }));
  });
  for (const v of res) {
    if (v.impact === 'serious' || v.impact === 'critical') {
      problems.push(`${page.url()}: accessibility (${v.impact}) ${v.id}: ${v.help} (${v.nodes} nodes)`);
    }
  }
  const path = join(OUT, `${String(shots.length + 1).padStart(2, '0')}-${shot}.png`);
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
}

async function go(page, path, shot, status = 200) {
  if (status !== 200) expected.set(BASE + path, status);
  const resp = await page.goto(BASE + path, { waitUntil: 'load' });
  check(resp.status() === status, `GET ${path} answered ${resp.status()}, not ${status}`);
  await inspect(page, resp, shot);
  return resp;
}

/// Clicks a submit button and waits for the page it leads to.
async function submit(page, button, shot) {
  const [resp] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load', timeout: 15000 }),
    button.click(),
  ]);
  await inspect(page, resp, shot);
  return resp;
}

async function flash(page, want) {
  const text = await page.locator('main').innerText();
  check(text.includes(want), `expected "${want}" on ${page.url()}, the page says: ${text.slice(0, 600)}`);
}

function row(page, table, text) {
  return page.locator(`#${table} tbody tr`, { hasText: text });
}

try {
  browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });

  // --- The admin signs in through the identity provider.
  const a = await newPage('admin');
  await go(a, '/ui/login', 'sign-in');
  // Started under another name of the server, the sign-in goes through the
  // server's own URL, where the provider sends the browser back.
  if (env.BASE_ALT) await a.goto(`${env.BASE_ALT}/ui/login`, { waitUntil: 'load' });
  await Promise.all([
    a.waitForURL((u) => !u.href.startsWith(BASE), { timeout: 15000 }),
    a.getByRole('link', { name: `Sign in with ${env.PROVIDER}` }).click(),
  ]);
  for (let i = 0; i < 6 && !a.url().startsWith(`${BASE}/ui`); i += 1) {
    if (await a.locator('input[name="login"]').count()) {
      await a.fill('input[name="login"]', env.ADMIN_LOGIN);
      await a.fill('input[name="password"]', 'anything');
    }
    await Promise.all([
      a.waitForNavigation({ timeout: 15000 }),
      a.locator('button[type="submit"]').first().click(),
    ]);
  }
  check(a.url() === `${BASE}/ui`, `not back at the console: ${a.url()}`);
  await inspect(a, null, 'clusters-admin');
  await flash(a, `Signed in as ${env.ADMIN_NAME}`);
  check(await a.getByRole('link', { name: 'Users' }).isVisible(), 'an admin sees the admin pages');

  // --- Users: add (local, with a password), reset the password, remove.
  await go(a, '/ui/users', 'users');
  await a.fill('#new-name', 'console-user');
  await a.fill('#new-password', 'console-pass-1');
  await submit(a, a.getByRole('button', { name: 'Add user' }), 'users-added');
  await flash(a, 'Added user console-user.');
  check(await row(a, 'users', 'console-user').count() === 1, 'the new user is listed');
  const r = row(a, 'users', 'console-user');
  await r.locator('summary').click();
  await r.locator('input[name="password"]').fill('console-pass-2');
  await submit(a, r.getByRole('button', { name: 'Set password' }), 'users-password');
  await flash(a, 'Set a new password for console-user.');
  await submit(a, row(a, 'users', 'console-user').getByRole('button', { name: 'Remove console-user' }), 'users-removed');
  await flash(a, 'Removed the user');
  check(await row(a, 'users', 'console-user').count() === 0, 'the user is gone');
  // Someone to grant to, later.
  await a.fill('#new-name', 'grantee');
  await submit(a, a.getByRole('button', { name: 'Add user' }), 'users-grantee');

  // --- Groups: add, add a member, remove the member, remove the group.
  await go(a, '/ui/groups', 'groups');
  await a.fill('#group-name', 'testers');
  await submit(a, a.getByRole('button', { name: 'Add group' }), 'groups-added');
  await flash(a, 'Added group testers.');
  await Promise.all([a.waitForNavigation(), a.getByRole('link', { name: 'testers' }).click()]);
  await inspect(a, null, 'group');
  await a.fill('#member', 'grantee');
  await submit(a, a.getByRole('button', { name: 'Add member' }), 'group-member-added');
  await flash(a, 'Added the member.');
  check(await row(a, 'members', 'grantee').count() === 1, 'the member is listed');
  await submit(a, row(a, 'members', 'grantee').getByRole('button', { name: 'Remove grantee' }), 'group-member-removed');
  await flash(a, 'Removed the member.');
  await go(a, '/ui/groups', 'groups-again');
  await submit(a, row(a, 'groups', 'testers').getByRole('button', { name: 'Remove testers' }), 'groups-removed');
  await flash(a, 'Removed the group.');

  // --- Grants: add with the pickers, see it, remove it.
  await go(a, '/ui/grants', 'grants');
  await a.selectOption('#kind', 'user');
  await a.fill('#subject', 'grantee');
  await a.selectOption('#destination', env.DESTINATION);
  await a.fill('#namespace', 'web');
  await a.selectOption('#role', 'edit');
  await submit(a, a.getByRole('button', { name: 'Add grant' }), 'grants-added');
  await flash(a, `Granted edit on ${env.DESTINATION}.web to grantee.`);
  const g = row(a, 'grants', 'user grantee');
  check(await g.count() === 1, 'the grant is listed');
  check((await g.innerText()).includes('not reported'), 'its state is shown');
  // The search works on the server too (without JavaScript).
  await go(a, '/ui/grants?q=no-such-grant', 'grants-searched');
  check(await a.locator('#grants tbody tr').count() === 0, 'the search left every grant shown');
  await go(a, '/ui/grants', 'grants-again');
  await submit(a, row(a, 'grants', 'user grantee').getByRole('button', { name: /^Remove grantee/ }), 'grants-removed');
  await flash(a, 'Removed the grant.');

  // --- What goes wrong is a console page too, saying where to go on.
  for (const [path, status, shot] of [
    ['/ui/no-such-page', 404, 'not-found'],
    ['/ui/users/x/remove', 405, 'not-a-page'],
    ['/ui/audit?page=abc', 400, 'bad-query'],
  ]) {
    const resp = await go(a, path, shot, status);
    check((resp.headers()['content-type'] || '').startsWith('text/html'), `${path} is not a page`);
    check(await a.getByRole('link', { name: "Go to the console's start page" }).count() === 1, `${path}: no way on`);
  }

  // --- Destinations: shown with their status; one removed.
  await go(a, '/ui/destinations', 'destinations');
  check(await row(a, 'destinations', env.DESTINATION).count() === 1, 'the destination is listed');
  await submit(a, row(a, 'destinations', env.SCRATCH).getByRole('button', { name: `Remove ${env.SCRATCH}` }), 'destinations-removed');
  await flash(a, 'Removed the destination.');
  check(await row(a, 'destinations', env.SCRATCH).count() === 0, 'the destination is gone');

  // --- Providers: add (discovery is checked), edit, remove.
  await go(a, '/ui/providers', 'providers');
  await a.fill('#p-name', 'corp-two');
  await a.fill('#p-url', env.IDP_ISSUER);
  await a.fill('#p-cid', 'infra-test');
  await a.fill('#p-secret', 'infra-test-secret');
  await submit(a, a.getByRole('button', { name: 'Add provider' }), 'providers-added');
  await flash(a, 'Added provider corp-two.');
  const p = row(a, 'providers', 'corp-two');
  await p.locator('summary').click();
  await p.locator('input[name="username_claim"]').fill('preferred_username');
  await submit(a, p.getByRole('button', { name: 'Save' }), 'providers-edited');
  await flash(a, 'Saved provider corp-two.');
  check((await row(a, 'providers', 'corp-two').innerText()).includes('preferred_username'), 'the edit shows');
  await submit(a, row(a, 'providers', 'corp-two').getByRole('button', { name: 'Remove corp-two' }), 'providers-removed');
  await flash(a, 'Removed the provider.');

  // --- Access keys: create (shown once), list, revoke.
  await go(a, '/ui/keys', 'keys');
  await a.fill('#k-name', 'console-key');
  await submit(a, a.getByRole('button', { name: 'Create key' }), 'keys-created');
  const key = (await a.locator('#new-key').innerText()).trim();
  check(/^[A-Za-z0-9]{10}\.[A-Za-z0-9]{24}$/.test(key), `the new key is shown: ${key}`);
  await go(a, '/ui/keys', 'keys-listed');
  check(!(await a.locator('main').innerText()).includes(key), 'the key is never shown again');
  await submit(a, row(a, 'keys', 'console-key').getByRole('button', { name: 'Remove console-key' }), 'keys-revoked');
  await flash(a, 'Revoked the key.');

  // --- Machine identities and their OIDC configuration.
  await go(a, '/ui/identities', 'identities');
  await a.fill('#i-name', 'deploy');
  await submit(a, a.getByRole('button', { name: 'Add identity' }), 'identities-added');
  await flash(a, 'Added machine identity deploy.');
  await Promise.all([a.waitForNavigation(), a.getByRole('link', { name: 'deploy' }).click()]);
  await inspect(a, null, 'identity');
  await a.fill('#o-disc', env.IDP_ISSUER);
  await a.fill('#o-iss', env.IDP_ISSUER);
  await a.fill('#o-sub', 'repo:octo-org/app:ref:refs/heads/main');
  await a.fill('#o-aud', 'infra');
  await submit(a, a.getByRole('button', { name: 'Save' }), 'identity-configured');
  await flash(a, 'Saved how it logs in.');
  check((await a.locator('#oidc').innerText()).includes('repo:octo-org/app:ref:refs/heads/main'), 'the configuration shows');
  await submit(a, a.getByRole('button', { name: 'Remove the OIDC configuration' }), 'identity-unconfigured');
  await flash(a, 'Removed the OIDC configuration.');
  await go(a, '/ui/identities', 'identities-again');
  await submit(a, row(a, 'identities', 'deploy').getByRole('button', { name: 'Remove deploy' }), 'identities-removed');
  await flash(a, 'Removed the machine identity.');

  // --- The audit log names who did all that.
  await go(a, `/ui/audit?action=user.create&actor=${encodeURIComponent(env.ADMIN_NAME)}`, 'audit');
  check(await row(a, 'audit', 'console-user').count() === 1, 'the console\'s change is audited, with its actor');

  // --- A plain user, with a local password.
  const b = await newPage('plain');
  await go(b, '/ui/login', 'sign-in-plain');
  // A wrong password says so (not that the user signs in elsewhere).
  await b.fill('#name', env.PLAIN_USER);
  await b.fill('#password', 'not-the-password');
  await submit(b, b.getByRole('button', { name: 'Sign in' }), 'sign-in-wrong');
  await flash(b, 'Wrong user name or password');
  await b.fill('#name', env.PLAIN_USER);
  await b.fill('#password', env.PLAIN_PASSWORD);
  await submit(b, b.getByRole('button', { name: 'Sign in' }), 'clusters-plain');
  check(b.url() === `${BASE}/ui`, `signed in: ${b.url()}`);
  check(await row(b, 'clusters', env.DESTINATION).count() >= 1, 'the plain user sees their cluster');
  check(!(await b.getByRole('link', { name: 'Users' }).count()), 'no admin links for a plain user');
  await go(b, '/ui/users', 'users-forbidden', 403);
  check((await b.locator('h1').innerText()).includes('Only infra admins'), 'a 403 page, not a blank one');

  // CSRF: a form without the token, or with another, is refused.
  for (const form of [{ name: 'x' }, { name: 'x', csrf: 'A'.repeat(43) }]) {
    const resp = await b.request.post(`${BASE}/ui/keys`, { form, maxRedirects: 0 });
    check(resp.status() === 403, `a form with csrf ${form.csrf} answered ${resp.status()}`);
    check((await resp.text()).includes('could not be checked'), 'the refusal says why');
  }

  // Revoking the session's key ends the session.
  const c = await newPage('plain-second');
  await go(c, '/ui/login', 'sign-in-second');
  await c.fill('#name', env.PLAIN_USER);
  await c.fill('#password', env.PLAIN_PASSWORD);
  await submit(c, c.getByRole('button', { name: 'Sign in' }), 'clusters-second');
  await go(c, '/ui/keys', 'keys-plain');
  const mine = (await row(c, 'keys', '(this session)').locator('td').first().innerText()).replace('(this session)', '').trim();
  await go(a, '/ui/keys', 'keys-admin-again');
  await submit(a, row(a, 'keys', mine).getByRole('button', { name: `Remove ${mine}` }), 'keys-session-revoked');
  const after = await c.goto(`${BASE}/ui`, { waitUntil: 'load' });
  check(c.url() === `${BASE}/ui/login`, `a revoked session goes back to sign-in: ${c.url()}`);
  await inspect(c, after, 'revoked-session');

  // Signing out ends the session.
  await submit(b, b.getByRole('button', { name: 'Sign out' }), 'signed-out');
  await flash(b, 'Signed out.');
  await b.goto(`${BASE}/ui`, { waitUntil: 'load' });
  check(b.url() === `${BASE}/ui/login`, `signed out: ${b.url()}`);

  // Readable on a phone: no sideways scrolling.
  await a.setViewportSize({ width: 390, height: 844 });
  for (const path of ['/ui', '/ui/grants', '/ui/audit']) {
    await go(a, path, `phone${path.replaceAll('/', '-')}`);
    const wide = await a.evaluate(() => document.documentElement.scrollWidth);
    check(wide <= 392, `${path} is ${wide}px wide on a 390px phone`);
  }

  check(problems.length === 0, `problems: ${problems.join(' | ')}`);
  process.stdout.write(`${JSON.stringify({ ok: true, screenshots: shots, pages })}\n`);
  await browser.close();
  process.exit(0);
} catch (e) {
  if (current) {
    try { await current.screenshot({ path: join(OUT, 'failure.png'), fullPage: true }); } catch { /* gone */ }
  }
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(e && e.message || e), url: current && current.url(), problems })}\n`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
