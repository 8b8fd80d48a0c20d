// authgate admin page. It talks only to the documented admin API on this origin
// (/admin/v1/...), with the admin key as `Authorization: Bearer`. The key lives in this
// tab's sessionStorage only: never in a URL, a cookie or localStorage. A new token lives
// in one variable and the page's fields until the tenant screen is left.
//
// Screens follow the URL fragment: `#/` is the tenant list, `#/tenants/{client}` a
// tenant. Everything is rendered with textContent, never innerHTML.

import { call, KEY_SLOT } from './api.js';
import { refreshExpiries, showExpiry } from './format.js';
import { $, clearMessages, handleFailure, say, session, show, TENANT_NAME, view } from './page.js';
import { forgetNewToken, showTenant, wireTenant } from './tenant.js';

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

const MODE_BADGES = { on: 'Required', report: 'Report only', off: 'Off' };

function badge(mode) {
  return span(MODE_BADGES[mode] || mode, `badge ${mode}`);
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
      cell('Require authentication', badge(doc.mode)),
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

// --- start ----------------------------------------------------------------------------

function wire() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('open-form').addEventListener('submit', openTenant);
  $('refresh-list').addEventListener('click', () => showList());
  wireTenant();
  window.addEventListener('hashchange', render);
  window.addEventListener('authgate:signed-out', (event) => showSignIn(event.detail));
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

