// The tenant screen: "Require authentication" (Off / Report only / On), "Expires in",
// when the old token stops working, generate / regenerate / revoke behind
// confirmations, each token's last use, and the new token shown once.

import { call } from './api.js';
import { duration, showExpiry, when } from './format.js';
import { $, clearMessages, handleFailure, say, session, show, TENANT_NAME, view } from './page.js';

const PRESETS = [
  [3600, '1 hour'],
  [86400, '1 day'],
  [7 * 86400, '7 days'],
  [30 * 86400, '30 days'],
  [90 * 86400, '90 days'],
];

const OVERLAPS = [
  [0, 'at once'],
  [300, 'in 5 minutes'],
  [3600, 'in 1 hour'],
];

const MODE_SAVED = {
  on: (t) => `Saved: authentication is now required. Bulk updates for ${t} need a valid token.`,
  report: (t) => `Saved: report only. Bulk updates for ${t} all pass; those that would be refused are counted and logged.`,
  off: (t) => `Saved: authentication is now off. Bulk updates for ${t} pass without a token.`,
};

// Every regeneration starts from "at once", the safe default that keeps the seed's rule.
function fillOverlap() {
  const select = $('overlap');
  const max = session.me.max_overlap_seconds ?? 0;
  select.replaceChildren();
  for (const [seconds, label] of OVERLAPS) {
    if (seconds <= max) select.append(new Option(label, String(seconds)));
  }
  select.value = '0';
  $('max-overlap').textContent = duration(max);
}

function lastUse(iso) {
  return iso ? when(iso) : 'Not since this gateway started';
}

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

export async function showTenant(name) {
  const screen = view.screen;
  show('tenant');
  view.tenant = name;
  view.doc = null;
  $('tenant-name').textContent = name;
  $('tenant-route').textContent = `POST /m2/${name}/profile/batchUpdate`;
  clearMessages('tenant-error', 'require-status', 'require-error', 'token-status', 'token-error');
  fillExpiresIn();
  fillOverlap();
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
  $('require').value = doc.mode;
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
    $('token-last-used').textContent = lastUse(token.last_used_at);
  } else {
    delete $('token-expires').dataset.expires;
  }
  const previous = doc.previous_token;
  $('previous-facts').hidden = !previous;
  if (previous) {
    $('previous-id').textContent = previous.id;
    showExpiry($('previous-until'), previous.valid_until);
    $('previous-last-used').textContent = lastUse(previous.last_used_at);
  } else {
    delete $('previous-until').dataset.expires;
  }
  $('overlap-choice').hidden = !token;
  $('generate').textContent = token ? 'Regenerate token' : 'Generate token';
  $('revoke').hidden = !token;
  $('new-token-warning').hidden = doc.mode !== 'off';
  setControls();
}

// Viewers see every control disabled, each pointing at the reason; nothing is
// clickable while a change is on its way or before the tenant is loaded.
function setControls() {
  const disabled = session.readOnly || view.busy || !view.doc;
  for (const id of ['require', 'expires-in', 'custom-amount', 'custom-unit', 'overlap', 'generate', 'revoke']) {
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
  const wanted = $('require').value;
  clearMessages('require-status', 'require-error');
  await busy(async () => {
    try {
      const doc = await call('PUT', tenantPath('/settings'), { mode: wanted });
      if (screen !== view.screen) return;
      showDocument(doc);
      say('require-status', MODE_SAVED[doc.mode](doc.tenant));
    } catch (error) {
      if (screen !== view.screen) return;
      if (view.doc) $('require').value = view.doc.mode;
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
  const overlap = before && before.token ? Number($('overlap').value) : 0;
  if (before && before.token) {
    const consequence = overlap
      ? `Calls using the current token keep working for ${duration(overlap)}, then fail.`
      : CONSEQUENCE;
    const ok = await confirmAction(
      `Regenerate the token for ${view.tenant}?`,
      `${consequence} Every script that sends it must be updated with the new token, which is shown only once.`,
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
      const body = { expires_in: expiresIn };
      if (overlap) body.previous_valid_for = overlap;
      const answer = await call('POST', tenantPath('/token'), body);
      if (screen !== view.screen) return;
      showNewToken(answer);
      let said = 'Token generated.';
      if (answer.previous_valid_until) {
        said = `New token generated. The previous token keeps working until ${when(answer.previous_valid_until)}.`;
      } else if (before && before.token) {
        said = 'New token generated. The previous token no longer works.';
      }
      say('token-status', said);
      $('overlap').value = '0';
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
    `${CONSEQUENCE} So will those using the previous token, if one is still valid. No token is valid until you generate a new one, so while authentication is required every bulk update is refused.`,
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
export function forgetNewToken() {
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

export function wireTenant() {
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
}
