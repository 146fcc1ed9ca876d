// {{title}}: an addonhost add-on.
//
// Private KV layout:
// - `resource/<id>`: the resource (plan, key)
// - `uuid/<uuid>`: the resource made for a platform uuid (idempotency)
//
// `./addonhost.js` is written by `addonhost plugins:build` (the SDK plus this
// add-on's manifest).

import {
  checkLogin, ctEqual, denied, error, escape, hexId, html, json, provisioned, secret, segments, session,
  sessionOf, store, text,
} from './addonhost.js';

function config(r) {
  return { '{{prefix}}_URL': `${r.baseUrl}/${r.id}?key=${r.key}` };
}

function load(id) {
  const r = store.get(`resource/${id}`);
  if (r === undefined) throw error(`no resource ${id}`);
  return r;
}

function save(r) {
  store.put(`resource/${r.id}`, r);
}

export const lifecycle = {
  provision(request) {
    // A retry carries the same uuid: answer the resource made for it.
    const known = store.get(`uuid/${request.uuid}`);
    if (known !== undefined) return provisioned(known, config(load(known)));
    const r = {
      id: `{{id}}-${hexId(4)}`,
      uuid: request.uuid,
      app: request.app,
      plan: request.plan,
      baseUrl: request.baseUrl,
      key: secret(32),
    };
    save(r);
    store.put(`uuid/${request.uuid}`, r.id);
    return provisioned(r.id, config(r), `${r.id} is ready on the ${r.plan} plan`);
  },
  deprovision(id) {
    const r = load(id);
    store.delete(`uuid/${r.uuid}`);
    store.delete(`resource/${id}`);
  },
  changePlan(id, plan) {
    // The host only sends plans from the manifest.
    const r = load(id);
    r.plan = plan;
    save(r);
    return undefined;
  },
};

export const credentials = {
  rotate(id) {
    const r = load(id);
    r.key = secret(32);
    save(r);
    return Object.entries(config(r));
  },
};

export const sso = {
  async verify(login) {
    const reason = await checkLogin(login);
    if (reason) return denied(reason);
    const r = store.get(`resource/${login.id}`);
    if (r === undefined) return denied(`no resource ${login.id}`);
    return session(login.email, `/dashboard/${r.id}`);
  },
};

function handle(request) {
  const segs = segments(request);
  if (request.method === 'GET' && segs.length === 2 && segs[0] === 'dashboard') {
    const signedIn = sessionOf(request);
    const r = store.get(`resource/${segs[1]}`);
    if (!signedIn || signedIn.resource !== segs[1] || r === undefined) {
      return text(403, 'sign in from the addonhost dashboard\n');
    }
    return html(200, `<!doctype html><title>{{title}}</title><h1>{{title}} · ${escape(r.id)}</h1>` +
      `<p>Signed in as <strong>${escape(signedIn.user)}</strong> · app ${escape(r.app)} · plan ${escape(r.plan)}</p>`);
  }
  if (request.method === 'GET' && segs.length === 1) {
    const r = store.get(`resource/${segs[0]}`);
    const key = new URL(request.url).searchParams.get('key') || '';
    if (r === undefined || !ctEqual(r.key, key)) return text(401, 'unknown resource or key\n');
    return json(200, { id: r.id, app: r.app, plan: r.plan });
  }
  return text(404, 'not found\n');
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
