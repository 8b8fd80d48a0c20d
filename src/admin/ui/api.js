// The admin API client: every call the page makes goes through `call`, with the admin
// key from this tab's sessionStorage as `Authorization: Bearer`. Failures become an
// ApiError whose message is written for a person, never raw JSON.

export const KEY_SLOT = 'authgate.adminKey';
const API = '/admin/v1';

export class ApiError extends Error {
  constructor(status, body) {
    super(explain(status, body));
    this.status = status;
  }
}

const FIELD_NAMES = {
  tenant: 'The client code',
  expires_in: 'The expiry',
  require_authentication: 'The “Require authentication” value',
  mode: 'The “Require authentication” value',
  previous_valid_for: 'The “Old token stops working” choice',
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

export async function call(method, path, body, key = sessionStorage.getItem(KEY_SLOT)) {
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
