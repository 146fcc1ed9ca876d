// The loader of a development build (`addonhost plugins:dev`).
//
// One component per world is built from this module once. The add-on's own
// files come from the host at each call (`addonhost:addon/dev`), already
// turned by plugins:dev from ES modules into functions of their imports,
// line for line, so an edit swaps source text instead of rebuilding the
// component, and a stack names the author's file and line. A thrown Error
// (not the SDK's `error(...)`) answers the call with its stack.

import * as kv from 'addonhost:addon/kv@0.1.0';
import * as config from 'addonhost:addon/config@0.1.0';
import * as logging from 'addonhost:addon/log@0.1.0';
import { sources } from 'addonhost:addon/dev@0.1.0';

const HOST_MODULES = {
  'addonhost:addon/kv@0.1.0': kv,
  'addonhost:addon/config@0.1.0': config,
  'addonhost:addon/log@0.1.0': logging,
};
const ENTRY = '.addonhost/entry';

const fetchListeners = [];
let app;

function resolve(from, spec) {
  const parts = spec.startsWith('/') ? [] : from.split('/').slice(0, -1);
  for (const p of spec.split('/')) {
    if (p === '..') parts.pop();
    else if (p !== '.' && p !== '') parts.push(p);
  }
  return parts.join('/');
}

function load() {
  if (app) return app;
  const files = new Map(sources());
  const modules = new Map();
  const require = (from, spec) => {
    if (HOST_MODULES[spec]) return HOST_MODULES[spec];
    const path = resolve(from, spec);
    if (modules.has(path)) return modules.get(path);
    const text = files.get(path);
    if (text === undefined) throw new Error(`${from}: cannot import '${spec}': there is no ${path} in the add-on's folder`);
    const exports = {};
    modules.set(path, exports);
    (0, eval)(text)((s) => require(path, s), exports);
    return exports;
  };
  app = require('', files.get(ENTRY) ?? 'index.js');
  return app;
}

// An Error's name, message and frames; the SDK's `error(...)` as it is.
function told(e) {
  if (!(e instanceof Error)) return e;
  const frames = String(e.stack || '')
    .split('\n')
    .filter((f) => f.trim() !== '' && !f.includes('addonhost-dev.js'))
    .slice(0, 8)
    .map((f) => {
      const at = f.lastIndexOf('@');
      return at >= 0 ? `  at ${f.slice(0, at) || '<anonymous>'} (${f.slice(at + 1)})` : `  at ${f}`;
    });
  return { message: [`${e.name}: ${e.message}`, ...frames].join('\n') };
}

function guarded(iface, method) {
  return (...args) => {
    try {
      const target = load()[iface];
      if (!target || typeof target[method] !== 'function') {
        throw new Error(`the add-on's entry module exports no ${iface}.${method}`);
      }
      const r = target[method](...args);
      return r && typeof r.then === 'function' ? r.catch((e) => { throw told(e); }) : r;
    } catch (e) {
      throw told(e);
    }
  };
}

export const lifecycle = {
  provision: guarded('lifecycle', 'provision'),
  deprovision: guarded('lifecycle', 'deprovision'),
  changePlan: guarded('lifecycle', 'changePlan'),
};
export const credentials = { rotate: guarded('credentials', 'rotate') };
export const sso = { verify: guarded('sso', 'verify') };

// @http-begin (kept for the addon-http worlds only)
// The add-on's own `fetch` listeners, which it adds while its module is
// evaluated, at call time.
{
  addEventListener('fetch', (event) => {
    try {
      load();
    } catch (e) {
      event.respondWith(new Response(`${told(e).message}\n`, { status: 500 }));
      return;
    }
    if (fetchListeners.length === 0) {
      event.respondWith(new Response('this add-on does not serve HTTP\n', { status: 404 }));
      return;
    }
    for (const listener of fetchListeners) listener(event);
  });
  globalThis.addEventListener = (type, listener) => {
    if (type === 'fetch') fetchListeners.push(listener);
  };
}
// @http-end
