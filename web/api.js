// Talking to charond: every request goes through here, so every one carries the token.
// The API is at the page's own origin (BASE is ''); the token is a header, never in a URL.

import { state, TOKEN_KEY } from './state.js';

const BASE = '';

/** ApiError is an answer that was not 2xx: status 0 when charond could not be reached. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** AuthRequired is thrown for a 401: the sign-in form has been asked for. */
export class AuthRequired extends Error {
  constructor() {
    super('charond asks for a token');
    this.status = 401;
  }
}

let onAuthRequired = () => {};

/** setAuthHandler names what to do when charond answers 401 (app.js shows the sign-in form). */
export function setAuthHandler(fn) {
  onAuthRequired = fn;
}

/** unauthorized forgets a token charond refused and asks for one. */
export function unauthorized() {
  setToken('');
  onAuthRequired();
}

export function setToken(token) {
  state.token = token;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lasts until the page is reloaded
  }
}

/** headers gives the request headers: extra, plus Authorization when there is a token. */
export function headers(extra = {}, token = state.token) {
  const hs = { ...extra };
  if (token) hs.Authorization = `Bearer ${token}`;
  return hs;
}

export function url(path) {
  return BASE + path;
}

/**
 * api sends a request and answers its JSON (null for 204). opts: method, body, type (the
 * body's Content-Type), signal, raw (answer the Response itself once it is 2xx), token (try
 * this token instead of the stored one; a 401 then does not ask for sign-in).
 */
export async function api(path, opts = {}) {
  const hs = headers({ Accept: 'application/json' }, opts.token ?? state.token);
  if (opts.type) hs['Content-Type'] = opts.type;
  let res;
  try {
    res = await fetch(url(path), {
      method: opts.method || 'GET',
      headers: hs,
      body: opts.body,
      signal: opts.signal,
      cache: 'no-store',
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, `charond cannot be reached (${err.message})`);
  }
  if (res.status === 401) {
    if (opts.token === undefined) unauthorized();
    throw new AuthRequired();
  }
  if (!res.ok) throw await errorOf(res);
  if (opts.raw) return res;
  if (res.status === 204) return null;
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(res.status, `charond's answer is not JSON: ${text.slice(0, 200)}`);
  }
}

/**
 * saveFile downloads path (with the token, which a plain link could not send) and saves it
 * as name, through an object URL.
 */
export async function saveFile(path, name, signal) {
  const res = await api(path, { raw: true, signal });
  const href = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000); // the download has its data by then
}

/** errorOf reads charond's {"error": "..."} from a failed answer. */
async function errorOf(res) {
  let text = '';
  try {
    text = await res.text();
  } catch {
    // the body was cut: say what the status says
  }
  let message = '';
  try {
    message = JSON.parse(text).error || '';
  } catch {
    message = text.trim();
  }
  return new ApiError(res.status, message || `${res.status} ${res.statusText}`);
}

/** errorText is what to show of any error a request ended with. */
export function errorText(err) {
  if (err instanceof ApiError && err.status) return `${err.message} (HTTP ${err.status})`;
  return err && err.message ? err.message : String(err);
}
