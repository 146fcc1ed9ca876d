// The SDK for writing addonhost add-ons in JavaScript.
//
// `addonhost plugins:build` writes this module, with the add-on's manifest
// appended as `manifest`, next to the add-on's entry file as `addonhost.js`
// (regenerated at every build; do not edit that copy), then runs
// componentize-js. An add-on's index.js exports the three interfaces of the
// `addon` world, and may serve HTTP with a `fetch` event listener:
//
//   import { provisioned, session, denied, checkLogin, store } from './addonhost.js';
//   export const lifecycle = { provision(request) {...}, deprovision(id) {...}, changePlan(id, plan) {...} };
//   export const credentials = { rotate(id) {...} };
//   export const sso = { async verify(login) {...} };
//   addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
//
// Every call runs in a fresh instance: keep state in `store`, never in
// module globals. Errors for the user: `throw error('plan x is unknown')`.

import * as kv from 'addonhost:addon/kv@0.1.0';
import * as config from 'addonhost:addon/config@0.1.0';
import { log } from 'addonhost:addon/log@0.1.0';

export { kv, config };

/** Oldest accepted SSO timestamp, in seconds before now. */
export const MAX_AGE_SECONDS = 5 * 60;
/** Furthest accepted SSO timestamp, in seconds after now (clock skew). */
export const MAX_SKEW_SECONDS = 60;

// ---- results -------------------------------------------------------------

/** An error the user reads as it is: `throw error('...')`. */
export function error(message) {
  return { message: String(message) };
}

/** The resource exists: its id and config vars (an object or [name, value] pairs). */
export function provisioned(id, configVars, message) {
  const entries = Array.isArray(configVars) ? configVars : Object.entries(configVars);
  return { tag: 'provisioned', val: { id, config: entries.map(([k, v]) => [k, String(v)]), message } };
}

/** The resource is being made; complete it later with `config.complete`. */
export function pending(id, message) {
  return { tag: 'pending', val: { id, message } };
}

/** An accepted SSO login: who, and the dashboard path to land on. */
export function session(user, landing) {
  return { tag: 'ok', val: { user, landing } };
}

/** A refused SSO login (the browser gets a 403). */
export function denied(reason) {
  return { tag: 'denied', val: String(reason) };
}

// ---- time, secrets, logging ------------------------------------------------

/** Unix seconds from the WASI wall clock. */
export function now() {
  return Math.floor(Date.now() / 1000);
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A random alphanumeric secret from WASI's secure random source. */
export function secret(length = 32) {
  let out = '';
  while (out.length < length) {
    const bytes = new Uint8Array(length);
    crypto.getRandomValues(bytes);
    for (const b of bytes) {
      // 248 = 4 * 62: rejecting the rest keeps every character equally likely.
      if (b < 248 && out.length < length) out += ALPHABET[b % 62];
    }
  }
  return out;
}

/** A random lowercase hex id of `n` bytes. */
export function hexId(n = 6) {
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  return hex(bytes);
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function info(message) {
  log('info', String(message));
}

export function warn(message) {
  log('warn', String(message));
}

// ---- SSO -----------------------------------------------------------------

/** hex(sha1("<id>:<salt>:<timestamp>")), the platform's SSO token. */
export async function token(id, salt, timestamp) {
  const digest = await crypto.subtle.digest('SHA-1', new TextEncoder().encode(`${id}:${salt}:${timestamp}`));
  return hex(new Uint8Array(digest));
}

/** Constant-time string equality (the length is not secret). */
export function ctEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * Why an SSO login must be refused, or null when it is good: the freshness
 * window (five minutes old to one minute ahead), then `token` and
 * `resourceToken`, compared in constant time.
 */
export async function checkLogin(login, salt = manifest.api.sso_salt, at = now()) {
  const ts = Number(login.timestamp);
  if (ts < at - MAX_AGE_SECONDS) return `timestamp is ${at - ts} s old (at most ${MAX_AGE_SECONDS} s accepted)`;
  if (ts > at + MAX_SKEW_SECONDS) return `timestamp is ${ts - at} s in the future (at most ${MAX_SKEW_SECONDS} s accepted)`;
  if (!ctEqual(await token(login.id, salt, ts), login.token.toLowerCase())) return 'token does not match';
  if (!ctEqual(await token(login.resourceId, salt, ts), login.resourceToken.toLowerCase())) {
    return 'resource_token does not match';
  }
  return null;
}

// ---- credentials -----------------------------------------------------------

/** A secret with the one it replaced (a plain object, stored as JSON). */
export function rotating(current) {
  return { current, previous: null, previousExpiresAt: null, rotatedAt: null };
}

/** Replaces the current secret; the old one stays valid for `graceSeconds`. */
export function rotate(r, next, at, graceSeconds) {
  r.previous = r.current;
  r.current = next;
  r.previousExpiresAt = at + graceSeconds;
  r.rotatedAt = at;
  return r;
}

/** Whether `candidate` is the current secret, or the previous one within its grace window. */
export function accepts(r, candidate, at) {
  if (ctEqual(r.current, candidate)) return true;
  return r.previous !== null && r.previousExpiresAt !== null && at <= r.previousExpiresAt && ctEqual(r.previous, candidate);
}

/** The grace window asked for with `-- --grace_seconds N` (0 to 7 days). */
export function graceFromOptions(options, fallback = manifest.rotation?.grace_seconds ?? 3600) {
  const found = options.find(([k]) => k === 'grace_seconds' || k === 'grace-seconds');
  if (!found) return fallback;
  const n = Number(found[1]);
  if (!/^[0-9]+$/.test(found[1]) || n > 7 * 86400) throw error(`--grace_seconds ${JSON.stringify(found[1])} must be 0 to 604800`);
  return n;
}

// ---- the private store -------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The add-on's private key-value store, values as JSON. */
export const store = {
  get(key) {
    const raw = kv.get(key);
    if (raw === undefined || raw === null) return undefined;
    try {
      return JSON.parse(decoder.decode(raw));
    } catch (e) {
      // Corrupt state is an error, never silently replaced.
      throw error(`stored record ${key} is unreadable: ${e.message}`);
    }
  },
  put(key, value) {
    try {
      kv.set(key, encoder.encode(JSON.stringify(value)));
    } catch (e) {
      throw error(e.payload ?? e.message ?? String(e));
    }
  },
  delete(key) {
    kv.delete(key);
  },
  // Every key starting with `prefix`, in order (listKeys answers at most
  // 1,000 at a time: the rest is paged with listKeysAfter).
  keys(prefix) {
    const keys = kv.listKeys(prefix);
    while (keys.length > 0 && keys.length % 1000 === 0) {
      const page = kv.listKeysAfter(prefix, keys[keys.length - 1], 1000);
      if (page.length === 0) break;
      keys.push(...page);
    }
    return keys;
  },
  // How many keys start with `prefix`.
  count(prefix) {
    return Number(kv.countKeys(prefix));
  },
  deletePrefix(prefix) {
    for (let keys = kv.listKeys(prefix); keys.length > 0; keys = kv.listKeys(prefix)) {
      for (const key of keys) kv.delete(key);
    }
  },
};

// ---- HTTP ----------------------------------------------------------------

export const USER_HEADER = 'x-addonhost-user';
export const RESOURCE_HEADER = 'x-addonhost-resource';

/** The path of a request relative to the add-on's base URL, split into segments. */
export function segments(request) {
  return new URL(request.url).pathname.split('/').filter((s) => s.length > 0).map(decodeURIComponent);
}

/** `Authorization: Basic …` as [user, password], or null. */
export function basicAuth(request) {
  const value = request.headers.get('authorization') || '';
  if (!/^basic /i.test(value)) return null;
  try {
    const text = atob(value.slice(6).trim());
    const i = text.indexOf(':');
    return i < 0 ? null : [text.slice(0, i), text.slice(i + 1)];
  } catch {
    return null;
  }
}

/** { user, resource } after SSO, as the host vouches for them; else null. */
export function sessionOf(request) {
  const user = request.headers.get(USER_HEADER);
  const resource = request.headers.get(RESOURCE_HEADER);
  return user && resource ? { user, resource } : null;
}

/** HTML-escapes text for the add-on's pages. */
export function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

export function json(status, value) {
  return new Response(JSON.stringify(value), { status, headers: { 'content-type': 'application/json' } });
}

export function text(status, body) {
  return new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8' } });
}

export function html(status, body) {
  return new Response(body, { status, headers: { 'content-type': 'text/html; charset=utf-8' } });
}
