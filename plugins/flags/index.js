// A feature-flag partner, as an addonhost add-on written in JavaScript.
//
// Provisioning creates a flag set with an API token and returns `FLAGS_URL`
// (`http://host/addons/flags/<set>`, the token as basic-auth password:
// `http://<set>:<token>@host/…`) and `FLAGS_ENVIRONMENT` (`--environment`
// at provisioning, `production` by default). The plan caps how many flags a
// set holds.
//
// Private KV layout:
// - `set/<id>`: the flag set (plan, token with grace window)
// - `uuid/<uuid>`: the set made for a platform uuid (idempotency)
// - `flag/<id>/<name>`: one flag, `{ enabled, updatedAt }`
//
// HTTP (relative to `<server>/addons/flags`), basic auth from `FLAGS_URL`:
// - `GET /<set>/flags`: every flag, `{ name: enabled }`
// - `GET /<set>/flags/<name>`: one flag (a missing flag is off: 200, enabled false)
// - `PUT /<set>/flags/<name>` with `{"enabled": true}`: create or switch it
// - `DELETE /<set>/flags/<name>`
// - `GET /dashboard/<set>` after SSO: the set's flags
//
// `./addonhost.js` is written by `addonhost plugins:build` (the SDK plus this
// add-on's manifest).

import {
  accepts, basicAuth, checkLogin, denied, error, escape, graceFromOptions, hexId, html, json, now, provisioned,
  rotate, rotating, secret, segments, session, sessionOf, store, text,
} from './addonhost.js';

const LIMITS = { free: 10, team: 1000 };
const FLAG_NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

function limit(plan) {
  if (!(plan in LIMITS)) throw error(`unknown plan ${JSON.stringify(plan)}; flags offers ${Object.keys(LIMITS).join(', ')}`);
  return LIMITS[plan];
}

function config(set) {
  const [scheme, rest] = set.baseUrl.split('://');
  return {
    FLAGS_URL: `${scheme}://${set.id}:${set.token.current}@${rest}/${set.id}`,
    FLAGS_ENVIRONMENT: set.environment,
  };
}

function load(id) {
  const set = store.get(`set/${id}`);
  if (set === undefined) throw error(`no flag set ${id}`);
  return set;
}

function save(set) {
  store.put(`set/${set.id}`, set);
}

function flagNames(id) {
  const prefix = `flag/${id}/`;
  return store.keys(prefix).map((k) => k.slice(prefix.length));
}

export const lifecycle = {
  provision(request) {
    limit(request.plan);
    const options = Object.fromEntries(request.options);
    const environment = options.environment ?? 'production';
    if (!/^[a-z][a-z0-9-]{0,30}$/.test(environment)) {
      throw error(`--environment ${JSON.stringify(environment)} must be lowercase letters, digits and dashes`);
    }
    const graceSeconds = graceFromOptions(request.options);
    const known = store.get(`uuid/${request.uuid}`);
    if (known !== undefined) return provisioned(known, config(load(known)), `flag set ${known} (already provisioned)`);
    const set = {
      id: `fs-${hexId(5)}`,
      uuid: request.uuid,
      app: request.app,
      plan: request.plan,
      baseUrl: request.baseUrl,
      environment,
      token: rotating(secret(32)),
      graceSeconds,
      createdAt: now(),
    };
    save(set);
    store.put(`uuid/${request.uuid}`, set.id);
    return provisioned(set.id, config(set),
      `flag set ${set.id} (${environment}) holds up to ${limit(set.plan)} flags; PUT them to $FLAGS_URL/flags/<name>`);
  },
  deprovision(id) {
    const set = load(id);
    store.deletePrefix(`flag/${id}/`);
    store.delete(`uuid/${set.uuid}`);
    store.delete(`set/${id}`);
  },
  changePlan(id, plan) {
    const cap = limit(plan);
    const set = load(id);
    const count = flagNames(id).length;
    if (count > cap) throw error(`flag set ${id} has ${count} flags; the ${plan} plan allows ${cap}: delete some first`);
    set.plan = plan;
    save(set);
    return undefined;
  },
};

export const credentials = {
  rotate(id) {
    const set = load(id);
    rotate(set.token, secret(32), now(), set.graceSeconds);
    save(set);
    return Object.entries(config(set));
  },
};

export const sso = {
  async verify(login) {
    const reason = await checkLogin(login);
    if (reason) return denied(reason);
    const set = store.get(`set/${login.id}`);
    if (set === undefined) return denied(`no flag set ${login.id}`);
    return session(login.email, `/dashboard/${set.id}`);
  },
};

function authorized(request, id) {
  const auth = basicAuth(request);
  const set = store.get(`set/${id}`);
  if (!auth || set === undefined || auth[0] !== id || !accepts(set.token, auth[1], now())) return null;
  return set;
}

async function handle(request) {
  const segs = segments(request);
  const method = request.method;
  if (method === 'GET' && segs.length === 2 && segs[0] === 'dashboard') {
    const signedIn = sessionOf(request);
    const set = store.get(`set/${segs[1]}`);
    if (!signedIn || signedIn.resource !== segs[1] || set === undefined) {
      return html(403, '<h1>403</h1><p>Sign in from the addonhost dashboard.</p>');
    }
    return dashboard(signedIn.user, set);
  }
  if (segs.length === 0) return text(404, 'not found\n');
  const set = authorized(request, segs[0]);
  if (!set) {
    return new Response('unknown flag set or wrong credentials\n', {
      status: 401, headers: { 'www-authenticate': 'Basic realm="flags"' },
    });
  }
  const route = segs.slice(1);
  if (method === 'GET' && route.length === 1 && route[0] === 'flags') {
    const all = {};
    for (const name of flagNames(set.id)) all[name] = store.get(`flag/${set.id}/${name}`).enabled;
    return json(200, all);
  }
  if (route.length !== 2 || route[0] !== 'flags') return text(404, 'not found\n');
  const name = route[1];
  if (!FLAG_NAME.test(name)) return json(400, { error: `flag name ${JSON.stringify(name)} must match ${FLAG_NAME}` });
  const key = `flag/${set.id}/${name}`;
  if (method === 'GET') {
    const flag = store.get(key);
    return json(200, { name, enabled: flag ? flag.enabled : false, known: flag !== undefined });
  }
  if (method === 'PUT') {
    let body;
    try {
      body = JSON.parse(await request.text());
    } catch {
      return json(400, { error: 'the body must be JSON like {"enabled": true}' });
    }
    if (typeof body?.enabled !== 'boolean') return json(400, { error: 'the body must be JSON like {"enabled": true}' });
    const exists = store.get(key) !== undefined;
    if (!exists && flagNames(set.id).length >= limit(set.plan)) {
      return json(507, { error: `the ${set.plan} plan holds ${limit(set.plan)} flags` });
    }
    store.put(key, { enabled: body.enabled, updatedAt: now() });
    return json(exists ? 200 : 201, { name, enabled: body.enabled });
  }
  if (method === 'DELETE') {
    store.delete(key);
    return new Response(null, { status: 204 });
  }
  return text(405, 'method not allowed\n');
}

function dashboard(user, set) {
  const rows = flagNames(set.id).map((name) => {
    const flag = store.get(`flag/${set.id}/${name}`);
    return `<tr><td><code>${escape(name)}</code></td><td>${flag.enabled ? 'on' : 'off'}</td></tr>`;
  }).join('');
  return html(200, `<!doctype html><html><head><meta charset="utf-8"><title>flags · ${escape(set.id)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;color:#222}
table{border-collapse:collapse;width:100%} td{border-top:1px solid #eee;padding:.4rem}</style></head>
<body><h1>Feature Flags · <code id="set">${escape(set.id)}</code></h1>
<p>Signed in as <strong id="user">${escape(user)}</strong> · app <code>${escape(set.app)}</code> ·
environment <strong>${escape(set.environment)}</strong> · plan <strong>${escape(set.plan)}</strong></p>
<table id="flags">${rows}</table></body></html>`);
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
