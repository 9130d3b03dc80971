// The JSON API, called as the signed-in key: the session cookie goes with
// every request, and state-changing ones carry the session's CSRF token.

let csrfToken = null;

export function setCsrf(token) {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};

export function whenSignedOut(f) {
  onUnauthorized = f;
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', 'The server did not answer: ' + e.message);
  }
  let json = null;
  try {
    json = await resp.json();
  } catch (e) {
    json = null;
  }
  if (!resp.ok || !json || json.success !== true) {
    const err = (json && json.error) || {};
    const e = new ApiError(resp.status, err.code || 'error', err.message || resp.statusText || 'request failed');
    if (resp.status === 401 && !path.startsWith('/console/api/login')) onUnauthorized(e);
    throw e;
  }
  return json.data;
}

export function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') s.set(k, String(v));
  }
  const text = s.toString();
  return text ? '?' + text : '';
}
