// Every call goes through the public API with the admin key the operator signed in with. The key
// lives in sessionStorage only (gone when the tab closes; never in a cookie or localStorage).

const STORAGE_KEY = 'threadgate.console.adminKey';

// The console is served at <base>/console/ (base: '' locally, '/<stage>' behind API Gateway).
export const apiBase = location.pathname.replace(/\/console(\/.*)?$/, '');

export const adminKey = () => sessionStorage.getItem(STORAGE_KEY);
export const signIn = (key) => sessionStorage.setItem(STORAGE_KEY, key);
export const signOut = () => sessionStorage.removeItem(STORAGE_KEY);

export class ApiError extends Error {
  constructor(status, type, message, param) {
    super(message);
    this.status = status;
    this.type = type;
    this.param = param;
  }
}

export async function api(method, path, { query, body } = {}) {
  const url = new URL(apiBase + path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, String(value));
  }
  const headers = { 'x-api-key': adminKey() || '' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(url, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit', cache: 'no-store',
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.type || 'error', error.message || `HTTP ${response.status}`, error.param || null);
  }
  return data;
}
