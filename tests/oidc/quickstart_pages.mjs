#!/usr/bin/env node
// The README quickstart's sign-in in a real, headless Chromium: the page
// `infra login` opens for `infra server --dev`'s embedded provider, signed
// in there, and the redirect back to the CLI's listener. Chromium enforces
// the Content-Security-Policy as people's browsers do (a scripted HTTP
// client does not): `form-action` also governs the redirect that follows
// the form's POST.
//
//   node tests/oidc/quickstart_pages.mjs
//
// Environment:
//   SIGNIN_URL   the URL `infra login` printed (…/oidc/authorize?…)
//   LOGIN        the name to type; default "newcomer"
//   GROUPS       the groups to type; default "" (e.g. "admins")
//   BACK_PREFIX  where the browser must end up; default "http://localhost:"
//   EXPECT       what the CLI's page must say (a regular expression,
//                case-insensitive); default "signed in to infra as"
//   OUT_DIR      where the screenshots go (created); default a temp dir
//   CHROMIUM     the browser; default /usr/bin/chromium
//
// Prints one JSON line on stdout: {"ok":true,"screenshots":[...],"final":URL}
// or {"ok":false,"error":"...","problems":[...]} with exit status 1. Any
// console message about the Content-Security-Policy, any console error and
// any page error is a failure.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const url = env.SIGNIN_URL;
const login = env.LOGIN || 'newcomer';
const groups = env.GROUPS || '';
const back = env.BACK_PREFIX || 'http://localhost:';
const expect = new RegExp(env.EXPECT || 'signed in to infra as', 'i');
const outDir = env.OUT_DIR || mkdtempSync(join(tmpdir(), 'infra-quickstart-'));
if (!url) {
  console.error('quickstart_pages.mjs: set SIGNIN_URL');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'infra-chromium-profile-'));
const problems = [];
const shots = [];
let context;
let page;

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function shot(name) {
  const path = join(outDir, name);
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
    viewport: { width: 800, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || /Content.Security.Policy|Refused to/i.test(m.text())) {
      problems.push(`${m.type()}: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

  const first = await page.goto(url, { waitUntil: 'load' });
  check(first && first.status() === 200, `GET ${url} answered ${first && first.status()}`);
  const csp = first.headers()['content-security-policy'] || '';
  check(csp.includes("frame-ancestors 'none'"), `the sign-in page's CSP is ${csp}`);
  check(!/script-src[^;]*unsafe-inline/.test(csp), `the sign-in page allows inline scripts: ${csp}`);
  check(await page.locator('input[name="username"]').isVisible(), 'no visible user name field');
  await page.fill('input[name="username"]', login);
  if (groups) await page.fill('input[name="groups"]', groups);
  await shot('1-sign-in.png');

  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(back), { timeout: 15000 }),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
  await page.waitForLoadState('load');
  const text = await page.locator('body').innerText();
  check(expect.test(text), `the CLI's page says: ${text}`);
  await shot('2-back-at-the-cli.png');
  check(problems.length === 0, `the browser complained: ${problems.join(' | ')}`);
  process.stdout.write(`${JSON.stringify({ ok: true, screenshots: shots, final: page.url(), text })}\n`);
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  if (page) {
    try {
      await page.screenshot({ path: join(outDir, 'failure.png'), fullPage: true });
    } catch { /* the page may be gone */ }
  }
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(e && e.message || e), url: page && page.url(), problems })}\n`);
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
