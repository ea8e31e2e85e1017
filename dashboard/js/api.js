// The REST API under /api/v1 with the session's bearer token.

const TOKEN = 'mimamori.token';

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function setSession(tok, me) {
  sessionStorage.setItem(TOKEN, tok);
  sessionStorage.setItem('mimamori.me', JSON.stringify(me));
}

export function me() {
  try {
    return JSON.parse(sessionStorage.getItem('mimamori.me') || 'null');
  } catch {
    return null;
  }
}

export function clearSession() {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem('mimamori.me');
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** One call; resolves to the JSON body (or null), rejects with ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const tok = token();
  if (tok) headers.Authorization = `Bearer ${tok}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (res.status === 401 && path !== '/auth/login') {
    clearSession();
    window.dispatchEvent(new Event('mimamori:logged-out'));
  }
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

export async function login(username, password) {
  const res = await api('POST', '/auth/login', { username, password });
  sessionStorage.setItem(TOKEN, res.token);
  const user = await api('GET', '/auth/me');
  setSession(res.token, user);
  return user;
}

export async function logout() {
  try {
    await api('POST', '/auth/logout');
  } finally {
    clearSession();
  }
}
