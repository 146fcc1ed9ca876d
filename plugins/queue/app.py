"""A message-queue partner, as an addonhost add-on written in Python.

Provisioning creates a queue with generated credentials and returns
`QUEUE_URL` (`http://<queue>:<password>@host/addons/queue/<queue>`); apps
push and pop messages over HTTP with those credentials. The plan caps how
many messages may wait, so a downgrade is refused while the queue holds more.

Private KV layout:
- `queue/<id>`: the queue record (plan, credentials with grace window, counters)
- `uuid/<uuid>`: the queue made for a platform uuid (idempotency)
- `msg/<id>/<seq>`: waiting messages, zero-padded so keys list in order

HTTP (relative to `<server>/addons/queue`), basic auth from `QUEUE_URL`
(the previous password works through the rotation grace window):
- `POST /<queue>/messages`: enqueue the body → 201 `{"seq", "depth"}`
  (507 when the plan's limit is reached)
- `POST /<queue>/messages/pop`: dequeue the oldest → 200 `{"seq", "body"}`,
  or 204 when empty
- `GET /<queue>`: depth, counters and plan, as JSON
- `GET /dashboard/<queue>` after SSO: the queue's page
"""

import base64

import addonhost
from addonhost import Response, Rotating, escape, store
from wit_world import exports

LIMITS = {"hobby": 1_000, "standard": 100_000}


def limit(plan):
    if plan not in LIMITS:
        raise addonhost.error(f"unknown plan {plan!r}; queue offers {', '.join(LIMITS)}")
    return LIMITS[plan]


def config(q):
    host = q["base_url"].split("://", 1)
    password = q["password"]["current"]
    return [("QUEUE_URL", f"{host[0]}://{q['id']}:{password}@{host[1]}/{q['id']}")]


def load(id):
    q = store.get(f"queue/{id}")
    if q is None:
        raise addonhost.error(f"no queue {id}")
    return q


def save(q):
    store.put(f"queue/{q['id']}", q)


def depth(q):
    return q["pushed"] - q["popped"]


class Lifecycle(exports.Lifecycle):
    def provision(self, request):
        limit(request.plan)
        grace = addonhost.grace_from_options(request.options)
        known = store.get(f"uuid/{request.uuid}")
        if known is not None:
            return addonhost.provisioned(known, config(load(known)), f"queue {known} (already provisioned)")
        q = {
            "id": f"q-{addonhost.hex_id(5)}",
            "uuid": request.uuid,
            "app": request.app,
            "plan": request.plan,
            "base_url": request.base_url,
            "password": Rotating(addonhost.secret(32)).to_dict(),
            "grace_seconds": grace,
            "pushed": 0,
            "popped": 0,
            "created_at": addonhost.now(),
        }
        save(q)
        store.put(f"uuid/{request.uuid}", q["id"])
        return addonhost.provisioned(
            q["id"],
            config(q),
            f"queue {q['id']} holds up to {limit(q['plan']):,} waiting messages; POST them to $QUEUE_URL/messages",
        )

    def deprovision(self, id):
        q = load(id)
        store.delete_prefix(f"msg/{id}/")
        store.delete(f"uuid/{q['uuid']}")
        store.delete(f"queue/{id}")

    def change_plan(self, id, plan):
        cap = limit(plan)
        q = load(id)
        if depth(q) > cap:
            raise addonhost.error(
                f"queue {id} holds {depth(q):,} messages; the {plan} plan allows {cap:,}: drain it first"
            )
        q["plan"] = plan
        save(q)
        return None  # the URL does not change with the plan


class Credentials(exports.Credentials):
    def rotate(self, id):
        q = load(id)
        password = Rotating.from_dict(q["password"])
        password.rotate(addonhost.secret(32), addonhost.now(), q["grace_seconds"])
        q["password"] = password.to_dict()
        save(q)
        return config(q)


class Sso(exports.Sso):
    def verify(self, login):
        reason = addonhost.check_login(login)
        if reason:
            return addonhost.denied(reason)
        q = store.get(f"queue/{login.id}")
        if q is None:
            return addonhost.denied(f"no queue {login.id}")
        return addonhost.session(login.email, f"/dashboard/{q['id']}")


def authorized(req, id):
    """The queue, if the request's basic auth opens it."""
    value = req.header("authorization") or ""
    if value[:6].lower() != "basic ":
        return None
    try:
        user, _, password = base64.b64decode(value[6:].strip()).decode().partition(":")
    except ValueError:
        return None
    q = store.get(f"queue/{id}")
    if q is None or user != id or not Rotating.from_dict(q["password"]).accepts(password, addonhost.now()):
        return None
    return q


def push(q, body):
    if depth(q) >= limit(q["plan"]):
        return Response.json(507, {"error": f"queue is full: the {q['plan']} plan holds {limit(q['plan']):,} messages"})
    q["pushed"] += 1
    store.put(f"msg/{q['id']}/{q['pushed']:012d}", base64.b64encode(body).decode())
    save(q)
    return Response.json(201, {"seq": q["pushed"], "depth": depth(q)})


def pop(q):
    keys = store.keys(f"msg/{q['id']}/")
    if not keys:
        return Response(204)
    body = base64.b64decode(store.get(keys[0]))
    store.delete(keys[0])
    q["popped"] += 1
    save(q)
    return Response.json(200, {"seq": int(keys[0].rsplit("/", 1)[1]), "body": body.decode("utf-8", "replace")})


def dashboard(user, q):
    waiting = store.keys(f"msg/{q['id']}/")[:20]
    rows = "".join(
        f"<tr><td>#{int(k.rsplit('/', 1)[1])}</td><td><code>{escape(base64.b64decode(store.get(k)).decode('utf-8', 'replace')[:200])}</code></td></tr>"
        for k in waiting
    )
    return Response.html(
        200,
        f"""<!doctype html><html><head><meta charset="utf-8"><title>queue · {escape(q['id'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse;width:100%}} td{{border-top:1px solid #eee;padding:.4rem}}</style></head>
<body><h1>Message Queue · <code id="queue">{escape(q['id'])}</code></h1>
<p>Signed in as <strong id="user">{escape(user)}</strong> · app <code>{escape(q['app'])}</code> ·
plan <strong>{escape(q['plan'])}</strong> (up to {limit(q['plan']):,} waiting)</p>
<p><span id="depth">{depth(q)}</span> waiting · {q['pushed']} pushed · {q['popped']} popped</p>
<table id="messages">{rows}</table></body></html>""",
    )


def handle(req):
    segs = req.segments()
    if req.method == "GET" and len(segs) == 2 and segs[0] == "dashboard":
        signed_in = req.session()
        q = store.get(f"queue/{segs[1]}")
        if signed_in is None or signed_in[1] != segs[1] or q is None:
            return Response.html(403, "<h1>403</h1><p>Sign in from the addonhost dashboard.</p>")
        return dashboard(signed_in[0], q)
    if not segs:
        return Response.text(404, "not found\n")
    q = authorized(req, segs[0])
    if q is None:
        return Response(401, "unknown queue or wrong credentials\n", headers=[("www-authenticate", 'Basic realm="queue"')])
    route = (req.method, tuple(segs[1:]))
    if route == ("POST", ("messages",)):
        return push(q, req.body)
    if route == ("POST", ("messages", "pop")):
        return pop(q)
    if route == ("GET", ()):
        return Response.json(
            200,
            {"queue": q["id"], "plan": q["plan"], "depth": depth(q), "pushed": q["pushed"], "popped": q["popped"], "limit": limit(q["plan"])},
        )
    return Response.text(404, "not found\n")


IncomingHandler = addonhost.http_handler(handle)
