// authgate admin page. It talks only to the documented admin API on this origin
// (/admin/v1/...), with the admin key as `Authorization: Bearer`. The key lives in this
// tab's sessionStorage only: never in a URL, a cookie or localStorage. A new token lives
// in one variable and the page's fields until the tenant screen is left.
//
// Screens follow the URL fragment: `#/` is the tenant list, `#/tenants/{client}` a
// tenant. Everything is rendered with textContent, never innerHTML.

const KEY_SLOT = 'authgate.adminKey';
const API = '/admin/v1';
const TENANT_NAME = /^[A-Za-z0-9._~-]{1,128}$/;
const PRESETS = [
  [3600, '1 hour'],
  [86400, '1 day'],
  [7 * 86400, '7 days'],
  [30 * 86400, '30 days'],
  [90 * 86400, '90 days'],
];

const $ = (id) => document.getElementById(id);

const session = {
  me: null, // the whoami answer: {name, role, max_ttl_seconds, default_ttl_seconds}
  get readOnly() {
    return !this.me || this.me.role !== 'approver';
  },
};

// The tenant screen's live data. `screen` changes whenever the fragment does, so an
// answer arriving after the operator moved on is dropped.
const view = { screen: 0, tenant: null, doc: null, newToken: null, busy: false };

class ApiError extends Error {
  constructor(status, body) {
    super(explain(status, body));
    this.status = status;
  }
}

const FIELD_NAMES = {
  tenant: 'The client code',
  expires_in: 'The expiry',
  require_authentication: 'The “Require authentication” value',
  body: 'The request',
};

// An API failure in words a person understands.
function explain(status, body) {
  const code = body && typeof body.error === 'string' ? body.error : '';
  switch (status) {
    case 0:
      return 'The gateway could not be reached. Check that it is running and that this page was opened from its admin address, then try again.';
    case 401:
      return 'The gateway did not accept this admin key. Check that you pasted the whole key (it starts with authgate_ak_) and that it is still in the gateway’s configuration.';
    case 403:
      return 'This admin key is a viewer key: it may look at tenants but not change them. Ask for an approver key to make changes.';
    case 400: {
      const field = body && typeof body.field === 'string' ? body.field : 'body';
      let detail = body && typeof body.message === 'string' ? body.message : '';
      if (detail.startsWith(field + ': ')) detail = detail.slice(field.length + 2);
      const what = FIELD_NAMES[field] || 'The request';
      return detail ? `${what} was refused: ${detail}.` : `${what} was refused by the gateway.`;
    }
    case 404:
      return 'The gateway does not know this address. It may be an older version without this part of the admin API.';
    case 503:
      if (code === 'state_unavailable') {
        return 'The gateway could not save the change, so nothing changed. Its state storage may be full or read-only: tell whoever runs the gateway, then try again.';
      }
      return 'The gateway is not available right now (it may be shutting down). Try again in a moment.';
    default:
      if (status >= 500) {
        return `The gateway had a problem (HTTP ${status}). Reload the page to see what is in effect now.`;
      }
      return `The gateway answered with an unexpected HTTP ${status}.`;
  }
}

async function call(method, path, body, key = sessionStorage.getItem(KEY_SLOT)) {
  const headers = { Authorization: `Bearer ${key || ''}` };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch {
    throw new ApiError(0, null);
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// --- messages -------------------------------------------------------------------------

function say(id, text) {
  $(id).textContent = text || '';
}

function clearMessages(...ids) {
  for (const id of ids) say(id, '');
}

// --- time -----------------------------------------------------------------------------

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function duration(seconds) {
  const minutes = Math.round(seconds / 60);
  if (minutes < 1) return 'less than a minute';
  if (minutes < 60) return plural(minutes, 'minute');
  const hours = Math.floor(minutes / 60);
  if (hours < 24) {
    const m = minutes % 60;
    return m ? `${plural(hours, 'hour')} ${plural(m, 'minute')}` : plural(hours, 'hour');
  }
  const days = Math.floor(hours / 24);
  const h = hours % 24;
  if (days < 7 && h) return `${plural(days, 'day')} ${plural(h, 'hour')}`;
  return plural(days, 'day');
}

function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

// "2026-11-02 10:00 UTC (in 1 day)", or "Expired 2026-11-02 10:00 UTC (3 hours ago)".
function expiry(iso) {
  const left = (new Date(iso).getTime() - Date.now()) / 1000;
  if (left <= 0) return { text: `Expired ${when(iso)} (${duration(-left)} ago)`, expired: true };
  return { text: `${when(iso)} (in ${duration(left)})`, expired: false };
}

// Elements showing time left carry data-expires; a timer keeps them current.
function showExpiry(element, iso) {
  element.dataset.expires = iso;
  const { text, expired } = expiry(iso);
  element.textContent = text;
  element.classList.toggle('expired', expired);
}

function refreshExpiries() {
  for (const element of document.querySelectorAll('[data-expires]')) {
    showExpiry(element, element.dataset.expires);
  }
}

// --- screens --------------------------------------------------------------------------

function show(id) {
  for (const screen of ['loading', 'sign-in', 'list', 'tenant']) $(screen).hidden = screen !== id;
}

function route() {
  const match = /^#\/tenants\/([^/]+)$/.exec(location.hash);
  if (!match) return { name: 'list' };
  let tenant;
  try {
    tenant = decodeURIComponent(match[1]);
  } catch {
    return { name: 'list' };
  }
  return { name: 'tenant', tenant };
}

async function render() {
  view.screen += 1;
  forgetNewToken();
  if (!session.me) {
    showSignIn();
    return;
  }
  const where = route();
  if (where.name === 'tenant') await showTenant(where.tenant);
  else await showList();
}

function showSignIn(message) {
  session.me = null;
  $('session').hidden = true;
  show('sign-in');
  say('sign-in-error', message);
  $('admin-key').focus();
}

function showSession() {
  $('whoami').textContent = `Signed in as ${session.me.name} (${session.me.role})`;
  $('session').hidden = false;
  $('list-readonly').hidden = !session.readOnly;
  $('readonly-reason').hidden = !session.readOnly;
}

// A 401 means the key stopped working: back to sign-in, saying why.
function handleFailure(error, messageId) {
  if (error instanceof ApiError && error.status === 401) {
    sessionStorage.removeItem(KEY_SLOT);
    showSignIn(error.message);
    return;
  }
  say(messageId, error.message);
}

// --- sign-in --------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const input = $('admin-key');
  const key = input.value.trim();
  say('sign-in-error', '');
  if (!key) {
    say('sign-in-error', 'Paste an admin key first.');
    input.focus();
    return;
  }
  const button = $('sign-in-button');
  button.disabled = true;
  try {
    session.me = await call('GET', '/whoami', undefined, key);
  } catch (error) {
    say('sign-in-error', error.message);
    input.focus();
    input.select();
    return;
  } finally {
    button.disabled = false;
  }
  sessionStorage.setItem(KEY_SLOT, key);
  input.value = '';
  showSession();
  await render();
}

function signOut() {
  sessionStorage.removeItem(KEY_SLOT);
  session.me = null;
  if (location.hash && location.hash !== '#/') {
    // The hashchange handler renders the sign-in screen.
    location.hash = '#/';
  } else {
    render();
  }
}

// --- tenant list ----------------------------------------------------------------------

function cell(label, ...children) {
  const td = document.createElement('td');
  td.dataset.label = label;
  td.append(...children);
  return td;
}

function span(text, className) {
  const element = document.createElement('span');
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

function badge(on) {
  return span(on ? 'Required' : 'Off', on ? 'badge on' : 'badge off');
}

async function showList() {
  const screen = view.screen;
  show('list');
  clearMessages('list-error', 'open-error');
  let answer;
  try {
    answer = await call('GET', '/tenants');
  } catch (error) {
    if (screen === view.screen) handleFailure(error, 'list-error');
    return;
  }
  if (screen !== view.screen) return;
  const rows = $('tenant-rows');
  rows.replaceChildren();
  const tenants = [...answer.tenants].sort((a, b) => a.tenant.localeCompare(b.tenant));
  for (const doc of tenants) {
    const tr = document.createElement('tr');
    const link = document.createElement('a');
    link.href = `#/tenants/${encodeURIComponent(doc.tenant)}`;
    link.textContent = doc.tenant;
    let token;
    let expires;
    if (doc.token) {
      token = document.createElement('span');
      token.append(span(`ID ${doc.token.id}`), span(doc.token.fingerprint, 'sub mono'));
      expires = document.createElement('span');
      showExpiry(expires, doc.token.expires_at);
    } else {
      token = span('No token');
      expires = span('—');
    }
    tr.append(
      cell('Client code', link),
      cell('Require authentication', badge(doc.require_authentication)),
      cell('Token', token),
      cell('Expires', expires),
    );
    rows.append(tr);
  }
  $('tenant-table').hidden = tenants.length === 0;
  $('no-tenants').hidden = tenants.length !== 0;
}

function openTenant(event) {
  event.preventDefault();
  const name = $('open-client').value.trim();
  if (!TENANT_NAME.test(name)) {
    say('open-error', 'A client code is 1 to 128 letters, digits, “-”, “.”, “_” or “~”.');
    $('open-client').focus();
    return;
  }
  $('open-client').value = '';
  location.hash = `#/tenants/${encodeURIComponent(name)}`;
}

// --- tenant screen --------------------------------------------------------------------

// Every tenant screen starts from the gateway's default lifetime.
function fillExpiresIn() {
  const select = $('expires-in');
  const max = session.me.max_ttl_seconds;
  select.replaceChildren();
  for (const [seconds, label] of PRESETS) {
    if (seconds <= max) select.append(new Option(label, String(seconds)));
  }
  select.append(new Option('Custom…', 'custom'));
  const preferred = [String(session.me.default_ttl_seconds), '86400'];
  select.value = preferred.find((v) => [...select.options].some((o) => o.value === v)) || select.options[0].value;
  $('custom-amount').value = '';
  $('custom-unit').value = '86400';
  $('max-ttl').textContent = duration(max);
  $('custom').hidden = select.value !== 'custom';
}

async function showTenant(name) {
  const screen = view.screen;
  show('tenant');
  view.tenant = name;
  view.doc = null;
  $('tenant-name').textContent = name;
  $('tenant-route').textContent = `POST /m2/${name}/profile/batchUpdate`;
  clearMessages('tenant-error', 'require-status', 'require-error', 'token-status', 'token-error');
  fillExpiresIn();
  setControls();
  $('tenant-title').focus();
  if (!TENANT_NAME.test(name)) {
    say('tenant-error', 'This is not a client code: use 1 to 128 letters, digits, “-”, “.”, “_” or “~”.');
    return;
  }
  await loadTenant(screen);
}

function tenantPath(suffix = '') {
  return `/tenants/${encodeURIComponent(view.tenant)}${suffix}`;
}

async function loadTenant(screen) {
  try {
    const doc = await call('GET', tenantPath());
    if (screen !== view.screen) return;
    showDocument(doc);
  } catch (error) {
    if (screen === view.screen) handleFailure(error, 'tenant-error');
  }
}

function showDocument(doc) {
  view.doc = doc;
  $('require').value = doc.require_authentication ? 'on' : 'off';
  const token = doc.token;
  $('token-none').hidden = Boolean(token);
  $('token-facts').hidden = !token;
  $('token-none').textContent = doc.require_authentication
    ? 'No token: bulk updates for this tenant are refused until you generate one.'
    : 'No token.';
  if (token) {
    $('token-id').textContent = token.id;
    $('token-fingerprint').textContent = token.fingerprint;
    $('token-created').textContent = when(token.created_at);
    showExpiry($('token-expires'), token.expires_at);
  } else {
    delete $('token-expires').dataset.expires;
  }
  $('generate').textContent = token ? 'Regenerate token' : 'Generate token';
  $('revoke').hidden = !token;
  $('new-token-warning').hidden = doc.require_authentication;
  setControls();
}

// Viewers see every control disabled, each pointing at the reason; nothing is
// clickable while a change is on its way or before the tenant is loaded.
function setControls() {
  const disabled = session.readOnly || view.busy || !view.doc;
  for (const id of ['require', 'expires-in', 'custom-amount', 'custom-unit', 'generate', 'revoke']) {
    const control = $(id);
    control.disabled = disabled;
    const described = (control.getAttribute('aria-describedby') || '')
      .split(' ')
      .filter((d) => d && d !== 'readonly-reason');
    if (session.readOnly) described.push('readonly-reason');
    if (described.length) control.setAttribute('aria-describedby', described.join(' '));
    else control.removeAttribute('aria-describedby');
  }
}

async function busy(action) {
  view.busy = true;
  setControls();
  try {
    return await action();
  } finally {
    view.busy = false;
    setControls();
  }
}

async function changeRequire() {
  const screen = view.screen;
  const wanted = $('require').value === 'on';
  clearMessages('require-status', 'require-error');
  await busy(async () => {
    try {
      const doc = await call('PUT', tenantPath('/settings'), { require_authentication: wanted });
      if (screen !== view.screen) return;
      showDocument(doc);
      say(
        'require-status',
        doc.require_authentication
          ? `Saved: authentication is now required. Bulk updates for ${doc.tenant} need the current token.`
          : `Saved: authentication is now off. Bulk updates for ${doc.tenant} pass without a token.`,
      );
    } catch (error) {
      if (screen !== view.screen) return;
      if (view.doc) $('require').value = view.doc.require_authentication ? 'on' : 'off';
      handleFailure(error, 'require-error');
    }
  });
  if (screen === view.screen && !$('require').disabled) $('require').focus();
}

// The chosen "Expires in", in seconds, or null after saying what is wrong.
function chosenExpiry() {
  const max = session.me.max_ttl_seconds;
  const choice = $('expires-in').value;
  if (choice !== 'custom') return Number(choice);
  const raw = $('custom-amount').value.trim();
  const amount = Number(raw);
  if (!raw || !Number.isInteger(amount) || amount < 1) {
    say('token-error', 'Enter the custom duration as a whole number, 1 or more.');
    $('custom-amount').focus();
    return null;
  }
  const seconds = amount * Number($('custom-unit').value);
  if (seconds > max) {
    say('token-error', `A token may last at most ${duration(max)} on this gateway; choose a shorter duration.`);
    $('custom-amount').focus();
    return null;
  }
  return seconds;
}

const CONSEQUENCE = 'Calls using the current token will fail at once.';

function confirmAction(title, text, confirmLabel) {
  const dialog = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = confirmLabel;
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener('close', done);
      resolve(dialog.returnValue === 'confirm');
    };
    dialog.addEventListener('close', done);
    dialog.returnValue = '';
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

async function generate() {
  const screen = view.screen;
  const before = view.doc;
  clearMessages('token-status', 'token-error', 'copy-status');
  const expiresIn = chosenExpiry();
  if (expiresIn === null) return;
  if (before && before.token) {
    const ok = await confirmAction(
      `Regenerate the token for ${view.tenant}?`,
      `${CONSEQUENCE} Every script that sends it must be updated with the new token, which is shown only once.`,
      'Regenerate token',
    );
    if (!ok || screen !== view.screen) {
      if (screen === view.screen) $('generate').focus();
      return;
    }
  }
  forgetNewToken();
  await busy(async () => {
    try {
      const answer = await call('POST', tenantPath('/token'), { expires_in: expiresIn });
      if (screen !== view.screen) return;
      showNewToken(answer);
      say(
        'token-status',
        before && before.token
          ? 'New token generated. The previous token no longer works.'
          : 'Token generated.',
      );
      const doc = await call('GET', tenantPath());
      if (screen === view.screen) showDocument(doc);
    } catch (error) {
      if (screen === view.screen) handleFailure(error, 'token-error');
    }
  });
  if (screen === view.screen && view.newToken) $('new-token').focus();
}

async function revoke() {
  const screen = view.screen;
  clearMessages('token-status', 'token-error', 'copy-status');
  const ok = await confirmAction(
    `Revoke the token for ${view.tenant}?`,
    `${CONSEQUENCE} No token is valid until you generate a new one, so while authentication is required every bulk update is refused.`,
    'Revoke token',
  );
  if (!ok || screen !== view.screen) {
    if (screen === view.screen) $('revoke').focus();
    return;
  }
  forgetNewToken();
  await busy(async () => {
    try {
      await call('DELETE', tenantPath('/token'));
      if (screen !== view.screen) return;
      say('token-status', 'Token revoked. No token is valid until you generate a new one.');
      const doc = await call('GET', tenantPath());
      if (screen === view.screen) showDocument(doc);
    } catch (error) {
      if (screen === view.screen) handleFailure(error, 'token-error');
    }
  });
  if (screen === view.screen) $('generate').focus();
}

function showNewToken(answer) {
  view.newToken = answer.token;
  $('new-token-value').value = answer.token;
  $('new-token-header').value = `Authorization: ${answer.token_type} ${answer.token}`;
  const line = $('new-token-expiry');
  line.textContent = '';
  const expires = document.createElement('span');
  showExpiry(expires, answer.expires_at);
  line.append('Expires ', expires, '.');
  $('new-token').hidden = false;
}

// The token is shown once: leaving the screen (or replacing the token) drops it.
function forgetNewToken() {
  view.newToken = null;
  $('new-token-value').value = '';
  $('new-token-header').value = '';
  $('new-token-expiry').textContent = '';
  say('copy-status', '');
  $('new-token').hidden = true;
}

async function copyFrom(id, what) {
  const input = $(id);
  let copied = false;
  try {
    await navigator.clipboard.writeText(input.value);
    copied = true;
  } catch {
    // Without the async clipboard (a plain-http admin address is not a secure
    // context), fall back to selecting the text and the legacy copy command.
    input.focus();
    input.select();
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
  }
  say('copy-status', copied ? `${what} copied.` : `Could not copy; the ${what.toLowerCase()} is selected, copy it with Ctrl+C.`);
  if (!copied) {
    input.focus();
    input.select();
  }
}

// --- start ----------------------------------------------------------------------------

function wire() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('open-form').addEventListener('submit', openTenant);
  $('refresh-list').addEventListener('click', () => showList());
  $('require').addEventListener('change', changeRequire);
  $('expires-in').addEventListener('change', () => {
    $('custom').hidden = $('expires-in').value !== 'custom';
    if (!$('custom').hidden) $('custom-amount').focus();
  });
  $('generate').addEventListener('click', generate);
  $('revoke').addEventListener('click', revoke);
  $('copy-token').addEventListener('click', () => copyFrom('new-token-value', 'Token'));
  $('copy-header').addEventListener('click', () => copyFrom('new-token-header', 'Header'));
  $('confirm-ok').addEventListener('click', () => $('confirm').close('confirm'));
  $('confirm-cancel').addEventListener('click', () => $('confirm').close('cancel'));
  window.addEventListener('hashchange', render);
  setInterval(refreshExpiries, 30000);
}

async function start() {
  wire();
  const key = sessionStorage.getItem(KEY_SLOT);
  if (!key) {
    showSignIn();
    return;
  }
  try {
    session.me = await call('GET', '/whoami', undefined, key);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) sessionStorage.removeItem(KEY_SLOT);
    showSignIn(error.message);
    return;
  }
  showSession();
  await render();
}

start();
