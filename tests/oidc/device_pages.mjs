#!/usr/bin/env node
// The device sign-in pages of `infra server` in a real, headless Chromium:
// what a person sees after `infra login SERVER --device`.
//
//   node tests/oidc/device_pages.mjs
//
// Environment:
//   DEVICE_URL       the verificationURIComplete the CLI printed
//                    (https://127.0.0.1:PORT/device?user_code=XXXX-XXXX)
//   DEVICE_CODE      the user code the CLI printed (XXXX-XXXX)
//   DEVICE_LOGIN     the name to type at the provider (tests/oidc/provider.mjs
//                    and the embedded provider of `infra server --dev` sign in
//                    anyone); default "alice"
//   DEVICE_DECISION  "approve" (default) or "deny": the button to press
//   DEVICE_OUT_DIR   where the screenshots go (created); default $OUT_DIR, else a temp dir
//   CHROMIUM         the browser; default /usr/bin/chromium (Debian's package)
//
// It opens the URL (the code must be filled in), continues to the provider,
// signs in there (login form, consent), comes back to the server's approval
// page, checks that the code and both buttons are visible and that the page
// is styled (no Content-Security-Policy violation, X-Frame-Options DENY),
// presses the button and checks the result page. It saves 1-code.png,
// 2-confirm.png and 3-done.png, and prints one JSON line on stdout:
//   {"ok":true,"screenshots":[...],"codeShown":"XXXX-XXXX","title":"..."}
// On failure it saves failure.png, prints {"ok":false,"error":"..."} and
// exits with status 1.
//
// The server's certificate is self-signed: ignoreHTTPSErrors. Chromium gets
// a new, empty profile, no sandbox (tests may run as root), no GPU and no
// background traffic.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const url = env.DEVICE_URL;
const code = env.DEVICE_CODE;
const login = env.DEVICE_LOGIN || 'alice';
const decision = env.DEVICE_DECISION || 'approve';
const outDir = env.DEVICE_OUT_DIR || env.OUT_DIR || mkdtempSync(join(tmpdir(), 'infra-device-pages-'));
if (!url || !code) {
  console.error('device_pages.mjs: set DEVICE_URL and DEVICE_CODE');
  process.exit(2);
}
if (!['approve', 'deny'].includes(decision)) {
  console.error('device_pages.mjs: DEVICE_DECISION must be "approve" or "deny"');
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

function hardened(resp, what) {
  const h = resp.headers();
  check(h['x-frame-options'] === 'DENY', `${what}: X-Frame-Options is ${h['x-frame-options']}`);
  check((h['content-security-policy'] || '').includes("frame-ancestors 'none'"),
    `${what}: Content-Security-Policy is ${h['content-security-policy']}`);
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
    if (/Content.Security.Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });

  // 1. The code page, with the code filled in from the link.
  const first = await page.goto(url, { waitUntil: 'load' });
  check(first && first.status() === 200, `GET ${url} answered ${first && first.status()}`);
  hardened(first, 'the code page');
  const input = page.locator('input[name="user_code"]');
  check(await input.isVisible(), 'no visible code field');
  check(await input.inputValue() === code, `the code field holds ${await input.inputValue()}, not ${code}`);
  await shot('1-code.png');

  // 2. Continue to the provider and sign in there.
  // (The provider may be elsewhere, or the server's own under --dev.)
  await Promise.all([
    page.waitForURL((u) => !u.href.startsWith(new URL(url).origin)
      || !u.pathname.startsWith('/device'), { timeout: 15000 }),
    page.getByRole('button', { name: 'Continue' }).click(),
  ]);
  for (let i = 0; i < 5 && !page.url().includes('/device/confirm'); i += 1) {
    if (await page.locator('input[name="login"]').count()) {
      await page.fill('input[name="login"]', login);
      await page.fill('input[name="password"]', 'anything');
    }
    if (await page.locator('input[name="username"]').count()) {
      await page.fill('input[name="username"]', login);
    }
    await Promise.all([
      page.waitForNavigation({ timeout: 15000 }),
      page.locator('button[type="submit"]').first().click(),
    ]);
  }
  check(page.url().includes('/device/confirm'), `not back at the approval page: ${page.url()}`);

  // 3. The approval page: the code, who is signing in, the two buttons.
  const confirmResp = await page.reload({ waitUntil: 'load' });
  hardened(confirmResp, 'the approval page');
  const codeShown = (await page.locator('#user-code').innerText()).trim();
  check(await page.locator('#user-code').isVisible(), 'the code is not visible');
  check(codeShown === code, `the approval page shows ${codeShown}, not ${code}`);
  const approve = page.getByRole('button', { name: 'Approve' });
  const deny = page.getByRole('button', { name: 'Deny' });
  check(await approve.isVisible(), 'no visible Approve button');
  check(await deny.isVisible(), 'no visible Deny button');
  const body = await page.locator('body').innerText();
  check(body.includes(login), `the approval page does not say who signs in: ${body}`);
  // Styled: the stylesheet passed the CSP (its hash), so the button is blue.
  const bg = await approve.evaluate((b) => getComputedStyle(b).backgroundColor);
  check(bg === 'rgb(37, 99, 235)', `the Approve button is not styled (background ${bg})`);
  await shot('2-confirm.png');

  // 4. Answer.
  const [answer] = await Promise.all([
    page.waitForNavigation({ timeout: 15000 }),
    (decision === 'approve' ? approve : deny).click(),
  ]);
  check(answer && answer.status() === 200, `the answer page answered ${answer && answer.status()}`);
  hardened(answer, 'the answer page');
  const title = (await page.locator('h1').innerText()).trim();
  const want = decision === 'approve' ? 'Device signed in' : 'Sign-in denied';
  check(title === want, `the answer page says ${title}, not ${want}`);
  await shot('3-done.png');
  check(problems.length === 0, `the browser complained: ${problems.join(' | ')}`);

  process.stdout.write(`${JSON.stringify({ ok: true, screenshots: shots, codeShown, title })}\n`);
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
