// What every screen shares: element lookup, messages, the signed-in key's identity, and
// the current screen's state.

import { ApiError, KEY_SLOT } from './api.js';

export const TENANT_NAME = /^[A-Za-z0-9._~-]{1,128}$/;

export const $ = (id) => document.getElementById(id);

export const session = {
  me: null, // the whoami answer: {name, role, max_ttl_seconds, default_ttl_seconds}
  get readOnly() {
    return !this.me || this.me.role !== 'approver';
  },
};

// The tenant screen's live data. `screen` changes whenever the fragment does, so an
// answer arriving after the operator moved on is dropped.
export const view = { screen: 0, tenant: null, doc: null, newToken: null, busy: false };

export function say(id, text) {
  $(id).textContent = text || '';
}

export function clearMessages(...ids) {
  for (const id of ids) say(id, '');
}

export function show(id) {
  for (const screen of ['loading', 'sign-in', 'list', 'tenant']) $(screen).hidden = screen !== id;
}

// A 401 means the key stopped working: app.js goes back to sign-in, saying why.
export function handleFailure(error, messageId) {
  if (error instanceof ApiError && error.status === 401) {
    sessionStorage.removeItem(KEY_SLOT);
    window.dispatchEvent(new CustomEvent('authgate:signed-out', { detail: error.message }));
    return;
  }
  say(messageId, error.message);
}
