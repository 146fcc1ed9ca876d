"""{{title}}: an addonhost add-on.

Private KV layout:
- `resource/<id>`: the resource (plan, key)
- `uuid/<uuid>`: the resource made for a platform uuid (idempotency)
"""

import hmac

import addonhost
from addonhost import Response, escape, store
from wit_world import exports


def config(r):
    return {"{{prefix}}_URL": f"{r['base_url']}/{r['id']}?key={r['key']}"}


def load(id):
    r = store.get(f"resource/{id}")
    if r is None:
        raise addonhost.error(f"no resource {id}")
    return r


def save(r):
    store.put(f"resource/{r['id']}", r)


class Lifecycle(exports.Lifecycle):
    def provision(self, request):
        # A retry carries the same uuid: answer the resource made for it.
        known = store.get(f"uuid/{request.uuid}")
        if known is not None:
            return addonhost.provisioned(known, config(load(known)))
        r = {
            "id": f"{{id}}-{addonhost.hex_id(4)}",
            "uuid": request.uuid,
            "app": request.app,
            "plan": request.plan,
            "base_url": request.base_url,
            "key": addonhost.secret(32),
        }
        save(r)
        store.put(f"uuid/{request.uuid}", r["id"])
        return addonhost.provisioned(r["id"], config(r), f"{r['id']} is ready on the {r['plan']} plan")

    def deprovision(self, id):
        r = load(id)
        store.delete(f"uuid/{r['uuid']}")
        store.delete(f"resource/{id}")

    def change_plan(self, id, plan):
        # The host only sends plans from the manifest.
        r = load(id)
        r["plan"] = plan
        save(r)
        return None


class Credentials(exports.Credentials):
    def rotate(self, id):
        r = load(id)
        r["key"] = addonhost.secret(32)
        save(r)
        return list(config(r).items())


class Sso(exports.Sso):
    def verify(self, login):
        reason = addonhost.check_login(login)
        if reason:
            return addonhost.denied(reason)
        r = store.get(f"resource/{login.id}")
        if r is None:
            return addonhost.denied(f"no resource {login.id}")
        return addonhost.session(login.email, f"/dashboard/{r['id']}")


def handle(req):
    segs = req.segments()
    if req.method == "GET" and len(segs) == 2 and segs[0] == "dashboard":
        signed_in = req.session()
        r = store.get(f"resource/{segs[1]}")
        if signed_in is None or signed_in[1] != segs[1] or r is None:
            return Response.text(403, "sign in from the addonhost dashboard\n")
        return Response.html(
            200,
            f"<!doctype html><title>{{title}}</title><h1>{{title}} · {escape(r['id'])}</h1>"
            f"<p>Signed in as <strong>{escape(signed_in[0])}</strong> · app {escape(r['app'])} · plan {escape(r['plan'])}</p>",
        )
    if req.method == "GET" and len(segs) == 1:
        r = store.get(f"resource/{segs[0]}")
        if r is None or not hmac.compare_digest(r["key"], req.params().get("key", "")):
            return Response.text(401, "unknown resource or key\n")
        return Response.json(200, {"id": r["id"], "app": r["app"], "plan": r["plan"]})
    return Response.text(404, "not found\n")


IncomingHandler = addonhost.http_handler(handle)
