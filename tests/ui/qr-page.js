// Drives wasup's QR page in headless Debian chromium (run by scripts/test-ui): sign in, the
// auto-refreshing list, a live QR and its rotation, a simulated scan → "connected", a logout →
// "ended", sign out. API calls (start, scan, disconnect) go from here with the key, not the page.
// Env: WASUP_URL, WASUP_KEY, OUT_DIR (screenshots), CHROMIUM (default /usr/bin/chromium).
'use strict';

const assert = require('node:assert/strict');
const path = require('node:path');
const { chromium } = require('playwright-core');

const base = process.env.WASUP_URL;
const key = process.env.WASUP_KEY;
const out = process.env.OUT_DIR;
/** Longest wait for anything the page should show (QR codes rotate every few seconds here). */
const PATIENCE_MS = 20000;

function step(text) {
  console.log(`test-ui: ${text}`);
}

/** Calls the JSON API with the key, as an operator's script would. */
async function api(method, route, body) {
  const response = await fetch(base + route, {
    method,
    headers: { 'X-Api-Key': key, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function startSession(userId) {
  const answer = await api('POST', '/start', { user_id: userId });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return answer.body.session_id;
}

/** Waits until the page's QR image is shown and decoded, and returns its rotation number. */
async function qrShown(page, after = 0) {
  await page.waitForFunction((previous) => {
    const img = document.getElementById('qr');
    return img !== null && !document.getElementById('qr-box').hidden && img.complete
      && img.naturalWidth > 0 && Number(img.dataset.rotation) > previous;
  }, after, { timeout: PATIENCE_MS });
  return Number(await page.getAttribute('#qr', 'data-rotation'));
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  const problems = [];
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 1100 } });
    const page = await context.newPage();
    page.setDefaultTimeout(PATIENCE_MS);
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      // Answers like 401 or 404 are logged as "Failed to load resource"; those are expected here.
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
        problems.push(`console: ${message.text()}`);
      }
    });
    const first = await startSession(1);

    step('unauthenticated /ui shows the login form (401)');
    const landing = await page.goto(`${base}/ui`);
    assert.equal(landing.status(), 401);
    assert.equal(landing.headers()['x-frame-options'], 'DENY');
    await page.locator('form[action="/ui/login"] #key').waitFor();

    step('a wrong key is refused');
    await page.fill('#key', 'not-the-key');
    await page.click('form[action="/ui/login"] button[type=submit]');
    await page.locator('.error', { hasText: 'Wrong key.' }).waitFor();
    await page.screenshot({ path: path.join(out, 'login.png'), fullPage: true });

    step('the right key signs in: HttpOnly, SameSite=Strict cookie without the key');
    await page.fill('#key', key);
    await page.click('form[action="/ui/login"] button[type=submit]');
    await page.waitForURL(`${base}/ui`);
    const cookies = await context.cookies();
    const cookie = cookies.find((c) => c.name === 'wasup_ui');
    assert.ok(cookie, JSON.stringify(cookies));
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    assert.ok(!cookie.value.includes(key), 'the cookie holds the key');
    assert.ok(!(await page.content()).includes(key), 'the page holds the key');

    step('the list shows the session, and a new one without a reload');
    await page.locator(`a[href="/ui/sessions/${first}"]`).waitFor();
    const second = await startSession(2);
    await page.locator(`a[href="/ui/sessions/${second}"]`).waitFor({ timeout: PATIENCE_MS });
    await page.screenshot({ path: path.join(out, 'list.png'), fullPage: true });

    step('the session page shows its QR, large and crisp');
    await page.click(`a[href="/ui/sessions/${first}"]`);
    await page.waitForURL(`${base}/ui/sessions/${first}`);
    const rotation = await qrShown(page);
    const box = await page.locator('#qr').boundingBox();
    assert.ok(box.width >= 320 && box.height >= 320, `QR shown at ${box.width}x${box.height}`);
    const rendering = await page.$eval('#qr', (img) => getComputedStyle(img).imageRendering);
    assert.equal(rendering, 'pixelated');
    const before = await page.locator('#qr').screenshot();
    await page.screenshot({ path: path.join(out, 'qr.png'), fullPage: true });

    step('the QR is replaced when it rotates');
    await qrShown(page, rotation);
    const after = await page.locator('#qr').screenshot();
    assert.ok(!before.equals(after), 'the rotated QR looks the same');

    step('a scan (simulated, from this script) turns the page to "connected"');
    const scan = await api('POST', `/sessions/${first}/simulate/scan`);
    assert.equal(scan.status, 202, JSON.stringify(scan.body));
    await page.locator('#connected').waitFor({ state: 'visible' });
    assert.match(await page.locator('#connected').innerText(), /Connected/);
    assert.equal(await page.locator('#qr-box').isHidden(), true, 'the QR stays on screen');
    assert.equal(await page.getAttribute('body', 'data-state'), 'active');
    await page.screenshot({ path: path.join(out, 'connected.png'), fullPage: true });

    step('a logout shows the session as ended');
    await page.goto(`${base}/ui/sessions/${second}`);
    await qrShown(page);
    const logout = await api('POST', `/sessions/${second}/simulate/disconnect`, { reason: 'logged_out' });
    assert.equal(logout.status, 202, JSON.stringify(logout.body));
    await page.locator('#ended').waitFor({ state: 'visible' });
    assert.match(await page.locator('#ended').innerText(), /Session ended/);
    assert.equal(await page.locator('#qr-box').isHidden(), true);
    await page.screenshot({ path: path.join(out, 'ended.png'), fullPage: true });

    step('the key never goes in a URL: /ui?key= is no login');
    assert.ok(!page.url().includes(key), page.url());

    step('signing out drops the cookie and revokes it on the server');
    await page.click('button:has-text("Sign out")');
    await page.locator('form[action="/ui/login"] #key').waitFor();
    const left = (await context.cookies()).filter((c) => c.name === 'wasup_ui');
    assert.deepEqual(left, []);
    await context.addCookies([cookie]);
    const revoked = await page.goto(`${base}/ui`);
    assert.equal(revoked.status(), 401, 'a signed-out cookie, put back, still works');
    const byUrl = await page.goto(`${base}/ui?key=${encodeURIComponent(key)}`);
    assert.equal(byUrl.status(), 401, '?key= signed in');
    await context.clearCookies();

    assert.deepEqual(problems, [], 'no script errors or CSP violations');
  } finally {
    await browser.close();
  }
}

main().then(
  () => step('passed'),
  (error) => {
    console.error(`test-ui: FAILED: ${error.stack || error}`);
    process.exit(1);
  },
);
