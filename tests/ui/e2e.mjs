// End-to-end test of the admin page in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; no browser download). Run by tests/ui.rs against a real
// gateway in front of a real upstream; it passes everything through the environment:
//
//   AUTHGATE_ADMIN_URL, AUTHGATE_PROXY_URL   http://127.0.0.1:PORT of each listener
//   AUTHGATE_APPROVER_KEY, AUTHGATE_VIEWER_KEY   admin keys named "ops" and "auditor"
//   AUTHGATE_EXPIRED_AT_MS   when tenant "beta"'s one-second token expired
//   AUTHGATE_SCREENSHOTS     folder for the screenshots
//   AUTHGATE_CHROMIUM        optional, defaults to /usr/bin/chromium
//
// Every wait is on a page condition (Playwright's auto-waiting, waitFor, waitForFunction),
// never a sleep. Exit status 0 means every check passed.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const started = Date.now();
const watchdog = setTimeout(() => {
  console.error('e2e: gave up after 150 s');
  process.exit(2);
}, 150_000);

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const ADMIN = need('AUTHGATE_ADMIN_URL');
const PROXY = need('AUTHGATE_PROXY_URL');
const APPROVER = need('AUTHGATE_APPROVER_KEY');
const VIEWER = need('AUTHGATE_VIEWER_KEY');
const EXPIRED_AT = Number(need('AUTHGATE_EXPIRED_AT_MS'));
const SHOTS = need('AUTHGATE_SCREENSHOTS');
const CHROMIUM = process.env.AUTHGATE_CHROMIUM || '/usr/bin/chromium';
const TENANT = 'acme';
const PAGE = `${ADMIN}/admin/ui/`;
const CONSEQUENCE = 'Calls using the current token will fail at once.';

// Flags for a root user on a machine whose network is closed to the outside.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function step(name) {
  console.log(`e2e: ${((Date.now() - started) / 1000).toFixed(1)} s  ${name}`);
}

// A bulk update through the proxy, as a script using the token would send it.
async function bulkUpdate(token) {
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const csv = 'thirdPartyId,profile.tier\nvisitor-1,gold\n';
  const response = await fetch(`${PROXY}/m2/${TENANT}/profile/batchUpdate`, {
    method: 'POST',
    headers,
    body: `batch=${encodeURIComponent(csv)}`,
  });
  return { status: response.status, body: await response.text() };
}

async function expectBulk(token, status, why) {
  const answer = await bulkUpdate(token);
  check(answer.status === status, `${why}: bulk update answered ${answer.status}, not ${status}: ${answer.body}`);
  if (status === 200) check(answer.body.includes('<success>true</success>'), `${why}: ${answer.body}`);
  return answer;
}

async function tenantDocument(name) {
  const response = await fetch(`${ADMIN}/admin/v1/tenants/${name}`, {
    headers: { Authorization: `Bearer ${VIEWER}` },
  });
  check(response.ok, `GET tenant ${name}: ${response.status}`);
  return response.json();
}

// --- what the browser sees, recorded throughout ---------------------------------------

let phase = 'load';
const consoleErrors = [];
const requestUrls = [];
const headerChecks = [];
const responseKinds = new Set();

function watch(page) {
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      consoleErrors.push({ phase, type: message.type(), text: message.text() });
    }
  });
  page.on('pageerror', (error) => consoleErrors.push({ phase, type: 'pageerror', text: String(error) }));
  page.on('request', (request) => requestUrls.push(request.url()));
  page.on('requestfailed', (request) =>
    consoleErrors.push({ phase, type: 'requestfailed', text: `${request.url()}: ${request.failure()?.errorText}` }),
  );
  page.on('response', (response) => {
    if (!response.url().startsWith(ADMIN)) return;
    headerChecks.push(checkHeaders(response));
  });
}

async function checkHeaders(response) {
  const headers = await response.allHeaders();
  const what = `${response.request().method()} ${response.url()} (${response.status()})`;
  const csp = headers['content-security-policy'] || '';
  check(csp.includes("default-src 'none'"), `${what}: CSP default-src: ${csp}`);
  check(csp.includes("script-src 'self'"), `${what}: CSP script-src: ${csp}`);
  check(!/unsafe|https?:|\*/.test(csp), `${what}: CSP allows inline code or other origins: ${csp}`);
  check(
    csp.includes("frame-ancestors 'none'") && headers['x-frame-options'] === 'DENY',
    `${what}: framing not denied`,
  );
  check(headers['referrer-policy'] === 'no-referrer', `${what}: Referrer-Policy`);
  check(headers['cache-control'] === 'no-store', `${what}: Cache-Control`);
  check(headers['x-content-type-options'] === 'nosniff', `${what}: X-Content-Type-Options`);
  check(!('set-cookie' in headers), `${what}: sets a cookie`);
  responseKinds.add(response.status() === 302 ? 'redirect' : response.request().resourceType());
}

// --- helpers on the page --------------------------------------------------------------

async function enabled(page, selector) {
  await page.waitForFunction((s) => {
    const element = document.querySelector(s);
    return element && !element.disabled;
  }, selector);
}

async function noHorizontalScroll(page, what) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
  }));
  check(scroll <= width, `${what}: the page is ${scroll} px wide in a ${width} px window`);
}

async function everyControlIsLabelled(page, what) {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea, button')]
      .filter((element) => {
        if (element.tagName === 'BUTTON') return !element.textContent.trim() && !element.getAttribute('aria-label');
        return element.labels.length === 0 && !element.getAttribute('aria-label');
      })
      .map((element) => element.id || element.outerHTML),
  );
  check(unlabelled.length === 0, `${what}: controls without a label: ${unlabelled.join(', ')}`);
}

async function storedKey(page) {
  return page.evaluate(() => ({
    session: sessionStorage.getItem('authgate.adminKey'),
    local: localStorage.length,
  }));
}

async function openTenant(page, name) {
  await page.getByLabel('Client code').fill(name);
  await page.getByRole('button', { name: 'Open tenant' }).click();
  await page.getByRole('heading', { level: 1, name: `Tenant ${name}` }).waitFor();
  // The tenant document has arrived once its token section says something.
  await page.waitForFunction(() => !document.getElementById('token-facts').hidden || document.getElementById('token-none').textContent !== '');
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, name), fullPage: true });
}

// --- the scenario ---------------------------------------------------------------------

async function scenario(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: ADMIN });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  watch(page);

  step('/admin/ redirects to the page, which asks for a key');
  await page.goto(`${ADMIN}/admin/`);
  check(page.url() === PAGE, `landed on ${page.url()}`);
  const keyField = page.getByLabel('Admin key');
  await keyField.waitFor();
  await everyControlIsLabelled(page, 'sign-in');

  step('a wrong key gets the message');
  phase = 'wrong-key';
  await keyField.fill(`authgate_ak_${'x'.repeat(43)}`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'The gateway did not accept this admin key' }).waitFor();
  check((await storedKey(page)).session === null, 'a refused key is not kept');
  phase = 'approver';

  step('sign in as approver (Enter in the key field)');
  await keyField.fill(APPROVER);
  await keyField.press('Enter');
  await page.getByText('Signed in as ops (approver)').waitFor();
  check((await storedKey(page)).session === APPROVER, 'the key is in sessionStorage');
  check(!(await keyField.inputValue()), 'the key field is emptied');
  await everyControlIsLabelled(page, 'tenant list');

  step(`open tenant ${TENANT} by client code`);
  await openTenant(page, TENANT);
  await enabled(page, '#require');
  check((await page.getByLabel('Require authentication').inputValue()) === 'off', 'a new tenant starts off');
  await expectBulk(null, 200, 'authentication off');
  await everyControlIsLabelled(page, 'tenant screen');

  step('"Report only": checked and counted, still forwarded');
  await page.getByLabel('Require authentication').selectOption({ label: 'Report only' });
  await page.getByRole('status').filter({ hasText: 'Saved: report only.' }).waitFor();
  const reported = await tenantDocument(TENANT);
  check(reported.mode === 'report' && reported.require_authentication === false, `report: ${JSON.stringify(reported)}`);
  await expectBulk(null, 200, 'report only, no token');

  step('turn "Require authentication" on');
  await page.getByLabel('Require authentication').selectOption('on');
  await page.getByRole('status').filter({ hasText: 'Saved: authentication is now required.' }).waitFor();
  const required = await tenantDocument(TENANT);
  check(required.require_authentication === true && required.mode === 'on', 'the server has it on');
  await expectBulk(null, 401, 'required, no token');

  step('generate a token with "Expires in" 1 day');
  await page.getByLabel('Expires in').selectOption({ label: '1 day' });
  await page.getByRole('button', { name: 'Generate token' }).click();
  const tokenField = page.getByLabel('Token', { exact: true });
  await tokenField.waitFor();
  const first = await tokenField.inputValue();
  check(/^authgate_tk_[A-Za-z0-9_-]{43}$/.test(first), `the page shows a token: ${first.slice(0, 12)}…`);
  const header = await page.getByLabel('Header to send with every bulk update').inputValue();
  check(header === `Authorization: Bearer ${first}`, `the header line: ${header}`);
  await page.locator('#new-token-expiry').filter({ hasText: '(in 1 day)' }).waitFor();
  await page.locator('#token-expires').filter({ hasText: '(in 1 day)' }).waitFor();
  const doc = await tenantDocument(TENANT);
  const lifetime = (Date.parse(doc.token.expires_at) - Date.parse(doc.token.created_at)) / 1000;
  check(Math.abs(lifetime - 86400) <= 1, `the token lasts a day, not ${lifetime} s`);
  await page.getByRole('button', { name: 'Copy token' }).click();
  await page.getByText('Token copied.').waitFor();
  check((await page.evaluate(() => navigator.clipboard.readText())) === first, 'the clipboard holds the token');

  step('a bulk update through the proxy with it succeeds');
  await expectBulk(first, 200, 'the new token');
  await shot(page, 'tenant-desktop.png');

  step('regenerate: the confirmation warns, Escape cancels, confirming replaces the token');
  await page.getByRole('button', { name: 'Regenerate token' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.filter({ hasText: CONSEQUENCE }).waitFor();
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  await expectBulk(first, 200, 'cancelled: the token still works');
  await page.getByRole('button', { name: 'Regenerate token' }).click();
  await dialog.getByRole('button', { name: 'Regenerate token' }).click();
  await page.getByText('The previous token no longer works.').waitFor();
  await page.waitForFunction((old) => {
    const value = document.getElementById('new-token-value').value;
    return value && value !== old;
  }, first);
  const second = await tokenField.inputValue();

  step('the old token is refused at once, the new one accepted');
  const refused = await expectBulk(first, 401, 'the replaced token');
  check(JSON.parse(refused.body).error === 'invalid_token', refused.body);
  await expectBulk(second, 200, 'the regenerated token');

  step('regenerate with "Old token stops working: in 5 minutes": both work, the page says until when');
  await page.getByRole('button', { name: 'Regenerate token' }).click();
  await dialog.filter({ hasText: CONSEQUENCE }).waitFor();
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  await page.getByLabel('Old token stops working').selectOption({ label: 'in 5 minutes' });
  await page.getByRole('button', { name: 'Regenerate token' }).click();
  await dialog.filter({ hasText: 'keep working for 5 minutes' }).waitFor();
  await dialog.getByRole('button', { name: 'Regenerate token' }).click();
  await page.getByText('The previous token keeps working until').waitFor();
  await page.waitForFunction((old) => {
    const value = document.getElementById('new-token-value').value;
    return value && value !== old;
  }, second);
  const overlapping = await tokenField.inputValue();
  await page.locator('#previous-facts').waitFor();
  await page.locator('#previous-until').filter({ hasText: /\(in [45] minutes\)/ }).waitFor();
  check((await page.locator('#previous-last-used').textContent()).includes('UTC'), 'the previous token was used');
  check(
    (await page.locator('#token-last-used').textContent()) === 'Not since this gateway started',
    'the new token is not used yet',
  );
  check((await page.getByLabel('Old token stops working').inputValue()) === '0', 'the choice goes back to "at once"');
  await expectBulk(second, 200, 'the previous token inside its 5 minutes');
  await expectBulk(overlapping, 200, 'the new token');
  const overlapDoc = await tenantDocument(TENANT);
  check(overlapDoc.previous_token && overlapDoc.previous_token.last_used_at, `previous token facts: ${JSON.stringify(overlapDoc)}`);
  const left = (Date.parse(overlapDoc.previous_token.valid_until) - Date.now()) / 1000;
  check(left > 240 && left <= 300, `the previous token stops in 5 minutes, not ${left} s`);

  step('the new token is gone once the page is left');
  await page.getByRole('link', { name: 'All tenants' }).click();
  await page.getByRole('heading', { level: 1, name: 'Tenants' }).waitFor();
  await page.goBack();
  await page.getByRole('heading', { level: 1, name: `Tenant ${TENANT}` }).waitFor();
  await enabled(page, '#revoke');
  check(await page.locator('#new-token').isHidden(), 'the token panel is hidden');
  check((await page.locator('#new-token-value').inputValue()) === '', 'the token field is empty');
  check(!(await page.content()).includes(overlapping), 'the token is nowhere in the page');

  step('revoke, by keyboard only, behind its confirmation');
  await page.locator('#revoke').focus();
  await page.keyboard.press('Enter');
  await dialog.filter({ hasText: CONSEQUENCE }).waitFor();
  check(
    (await page.evaluate(() => document.activeElement.id)) === 'confirm-cancel',
    'the safe choice has the focus',
  );
  await page.keyboard.press('Tab');
  check((await page.evaluate(() => document.activeElement.textContent)) === 'Revoke token', 'Tab reaches the confirm button');
  await page.keyboard.press('Enter');
  await page.getByText('Token revoked.').waitFor();
  await page.getByText('No token: bulk updates for this tenant are refused until you generate one.').waitFor();
  await expectBulk(overlapping, 401, 'the revoked token');
  await expectBulk(second, 401, 'the previous token, ended by the revocation');
  check(await page.locator('#previous-facts').isHidden(), 'no previous token after revoking');

  step('a custom "Expires in" above the server maximum is refused on the page');
  await enabled(page, '#generate');
  await page.getByLabel('Expires in').selectOption('custom');
  await page.getByLabel('Custom duration', { exact: true }).fill('91');
  await page.getByLabel('Unit of the custom duration').selectOption({ label: 'days' });
  await page.getByRole('button', { name: 'Generate token' }).click();
  await page.getByRole('alert').filter({ hasText: 'at most 90 days' }).waitFor();
  check((await tenantDocument(TENANT)).token === null, 'nothing was generated');
  await page.getByLabel('Custom duration', { exact: true }).fill('12');
  await page.getByLabel('Unit of the custom duration').selectOption({ label: 'hours' });
  await page.getByRole('button', { name: 'Generate token' }).click();
  await page.locator('#token-expires').filter({ hasText: '(in 12 hours)' }).waitFor();
  const third = await tokenField.inputValue();
  await expectBulk(third, 200, 'the custom-lifetime token');

  step('the tenant list shows each state, expired plainly');
  await page.waitForFunction((t) => Date.now() > t, EXPIRED_AT);
  await page.getByRole('link', { name: 'All tenants' }).click();
  const acmeRow = page.getByRole('row').filter({ has: page.getByRole('link', { name: TENANT, exact: true }) });
  await acmeRow.filter({ hasText: 'Required' }).filter({ hasText: '(in 12 hours)' }).waitFor();
  const betaRow = page.getByRole('row').filter({ has: page.getByRole('link', { name: 'beta', exact: true }) });
  await betaRow.locator('.expired').filter({ hasText: 'Expired' }).waitFor();
  await shot(page, 'tenants-desktop.png');

  step('360 px wide: no sideways scrolling');
  await page.setViewportSize({ width: 360, height: 780 });
  await noHorizontalScroll(page, 'tenant list at 360 px');
  await shot(page, 'tenants-360.png');
  await acmeRow.getByRole('link', { name: TENANT, exact: true }).click();
  await page.getByRole('heading', { level: 1, name: `Tenant ${TENANT}` }).waitFor();
  await enabled(page, '#revoke');
  await noHorizontalScroll(page, 'tenant screen at 360 px');
  await shot(page, 'tenant-360.png');
  await page.setViewportSize({ width: 1280, height: 900 });

  step('sign out forgets the key');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await keyField.waitFor();
  check((await storedKey(page)).session === null, 'the key is gone from sessionStorage');

  step('a viewer sees every control disabled, saying why');
  phase = 'viewer';
  await keyField.fill(VIEWER);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Signed in as auditor (viewer)').waitFor();
  await page.getByText('Read-only: you signed in with a viewer key').first().waitFor();
  await openTenant(page, TENANT);
  const reason = page.locator('#readonly-reason');
  await reason.waitFor();
  check((await reason.textContent()).includes('needs an approver key'), 'the reason is given');
  for (const [role, name] of [
    ['combobox', 'Require authentication'],
    ['combobox', 'Expires in'],
    ['combobox', 'Old token stops working'],
    ['button', 'Regenerate token'],
    ['button', 'Revoke token'],
  ]) {
    const control = page.getByRole(role, { name, exact: true });
    check(await control.isDisabled(), `${name} is disabled for a viewer`);
    const described = (await control.getAttribute('aria-describedby')) || '';
    check(described.split(' ').includes('readonly-reason'), `${name} points at the reason`);
  }
  check((await page.getByLabel('Expires in').inputValue()) === '86400', 'each screen starts at the default lifetime');
  await shot(page, 'tenant-viewer-desktop.png');

  step('the key never left sessionStorage');
  for (const url of requestUrls) {
    check(!url.includes(APPROVER) && !url.includes(VIEWER), `a key in a URL: ${url}`);
    check(!url.includes(first) && !url.includes(second) && !url.includes(overlapping), `a token in a URL: ${url}`);
  }
  check((await context.cookies()).length === 0, 'no cookies');
  check((await storedKey(page)).local === 0, 'nothing in localStorage');
  await context.close();
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  try {
    await scenario(browser);
  } finally {
    await browser.close();
  }

  step('every admin response had the security headers');
  await Promise.all(headerChecks);
  for (const kind of ['redirect', 'document', 'script', 'stylesheet', 'fetch']) {
    check(responseKinds.has(kind), `no ${kind} response was checked (saw ${[...responseKinds].join(', ')})`);
  }

  // The wrong key's 401 is the one error the browser itself reports, by design.
  const unexpected = consoleErrors.filter(
    (e) => !(e.phase === 'wrong-key' && /status of 401/.test(e.text)),
  );
  check(unexpected.length === 0, `console errors: ${JSON.stringify(unexpected, null, 1)}`);
  for (const e of consoleErrors) step(`expected console ${e.type} (${e.phase}): ${e.text}`);
  step(`passed (${headerChecks.length} admin responses checked)`);
}

main().then(
  () => {
    clearTimeout(watchdog);
  },
  (error) => {
    console.error(`e2e: FAILED: ${error.stack || error}`);
    process.exit(1);
  },
);
