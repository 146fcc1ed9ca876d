#!/usr/bin/env python3
"""A remote add-on provider that is not addonhost: Heroku's Add-on Partner
API in the Python standard library, for addonhost's platform-mode tests.

    python3 provider.py --id pyprov --password P --salt S [--port 0]

prints `listening on PORT` once it serves. The plan of each provisioning
chooses how it behaves:

- `basic`: answers at once (200) with PYPROV_URL; plan changes and
  rotations answer new config; SSO at POST /sso checks the token.
- `async`: answers 202, then completes through the platform's API: trades
  the oauth_grant at /oauth/token, PATCHes the config, POSTs
  actions/provision (the callback_url names the platform).
- `hold`: answers 202 and does nothing more: the test completes it
  through the platform's API itself.
- misbehaving: `wrong-status` (500), `redirect` (302), `slow` (answers
  after --slow seconds), `bad-json`, `no-id`, `unlisted` (a var the
  manifest does not list), `not-string` (a number as a value), `refuse`
  (422 with a message).

`GET /debug/requests` lists what it was sent (for the tests to look at).
"""

import argparse
import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
LOCK = threading.Lock()
RESOURCES = {}  # id -> {"uuid", "plan", "password"}
BY_UUID = {}  # uuid -> id
SLOWED = set()  # uuids whose first request was answered late
REQUESTS = []  # what was received, newest last
COUNTER = [0]


def url_of(res):
    return f"http://{res['id']}:{res['password']}@pyprov.example/{res['id']}"


def config_of(res):
    return {"PYPROV_URL": url_of(res)}


def new_secret():
    COUNTER[0] += 1
    return hashlib.sha1(f"{time.time()}-{COUNTER[0]}".encode()).hexdigest()[:16]


def complete_later(uuid, res, callback_url, grant):
    """The async half: through the platform's API, as Heroku's docs say."""
    time.sleep(0.2)
    platform = callback_url.rsplit("/vendor/apps/", 1)[0]
    form = urllib.parse.urlencode(
        {
            "grant_type": "authorization_code",
            "code": grant["code"],
            "client_secret": ARGS.password,
        }
    ).encode()
    token = json.load(urllib.request.urlopen(f"{platform}/oauth/token", form))
    headers = {
        "Authorization": f"Bearer {token['access_token']}",
        "Accept": "application/vnd.heroku+json; version=3",
        "Content-Type": "application/json",
    }
    body = json.dumps(
        {"config": [{"name": k, "value": v} for k, v in config_of(res).items()]}
    ).encode()
    req = urllib.request.Request(
        f"{platform}/addons/{uuid}/config", body, headers, method="PATCH"
    )
    urllib.request.urlopen(req).read()
    req = urllib.request.Request(
        f"{platform}/addons/{uuid}/actions/provision", b"{}", headers, method="POST"
    )
    urllib.request.urlopen(req).read()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="application/json", headers=()):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def authorized(self):
        want = "Basic " + base64.b64encode(
            f"{ARGS.id}:{ARGS.password}".encode()
        ).decode()
        got = self.headers.get("Authorization") or ""
        if hmac.compare_digest(got.encode(), want.encode()):
            return True
        self.answer(
            401,
            {"message": "unauthorized"},
            headers=[("WWW-Authenticate", 'Basic realm="pyprov"')],
        )
        return False

    def do_GET(self):
        if self.path == "/debug/requests":
            with LOCK:
                return self.answer(200, REQUESTS)
        self.answer(404, {"message": "not found"})

    def do_POST(self):
        raw = self.body()
        path = urllib.parse.urlparse(self.path).path
        if path == "/sso":
            return self.sso(raw)
        if not self.authorized():
            return
        body = json.loads(raw or b"{}")
        with LOCK:
            REQUESTS.append({"method": "POST", "path": path, "body": body})
        if path == "/heroku/resources":
            return self.provision(body)
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[3] == "rotate":
            res = RESOURCES.get(parts[2])
            if res is None or res["plan"] == "norotate":
                return self.answer(404, {"message": "no such resource"})
            res["password"] = new_secret()
            return self.answer(200, {"config": config_of(res)})
        self.answer(404, {"message": "not found"})

    def provision(self, body):
        plan = body.get("plan", "basic")
        uuid = body["uuid"]
        if plan == "wrong-status":
            return self.answer(500, b"internal trouble", "text/plain")
        if plan == "redirect":
            return self.answer(302, b"", "text/plain", [("Location", "/elsewhere")])
        if plan == "slow" and uuid not in SLOWED:
            # Late the first time: the platform gives up and asks again.
            SLOWED.add(uuid)
            time.sleep(ARGS.slow)
        if plan == "bad-json":
            return self.answer(200, b"{not json", "application/json")
        if plan == "refuse":
            return self.answer(422, {"message": "no capacity left in this region"})
        with LOCK:
            rid = BY_UUID.get(uuid)
            if rid is None:
                rid = f"py-{len(RESOURCES) + 1}"
                RESOURCES[rid] = {"id": rid, "uuid": uuid, "plan": plan, "password": new_secret()}
                BY_UUID[uuid] = rid
            res = RESOURCES[rid]
        if plan == "no-id":
            return self.answer(200, {"config": config_of(res)})
        if plan == "unlisted":
            return self.answer(200, {"id": rid, "config": {"PYPROV_URL": url_of(res), "DATABASE_URL": "postgres://x@y/z"}})
        if plan == "not-string":
            return self.answer(200, {"id": rid, "config": {"PYPROV_URL": 42}})
        if plan == "hold":
            return self.answer(202, {"id": rid, "message": "the test completes this one"})
        if plan == "async":
            threading.Thread(
                target=complete_later,
                args=(uuid, res, body["callback_url"], body["oauth_grant"]),
                daemon=True,
            ).start()
            return self.answer(202, {"id": rid, "message": "provisioning in the background"})
        self.answer(200, {"id": rid, "config": config_of(res), "message": f"resource {rid} is ready"})

    def do_PUT(self):
        raw = self.body()
        if not self.authorized():
            return
        body = json.loads(raw or b"{}")
        path = urllib.parse.urlparse(self.path).path
        with LOCK:
            REQUESTS.append({"method": "PUT", "path": path, "body": body})
        res = RESOURCES.get(path.rsplit("/", 1)[-1])
        if res is None:
            return self.answer(404, {"message": "no such resource"})
        res["plan"] = body.get("plan")
        res["password"] = new_secret()
        self.answer(200, {"config": config_of(res), "message": f"now on {res['plan']}"})

    def do_DELETE(self):
        self.body()
        if not self.authorized():
            return
        path = urllib.parse.urlparse(self.path).path
        with LOCK:
            REQUESTS.append({"method": "DELETE", "path": path})
        rid = path.rsplit("/", 1)[-1]
        if RESOURCES.pop(rid, None) is None:
            return self.answer(410, {"message": "gone"})
        self.answer(200, {})

    def sso(self, raw):
        form = dict(urllib.parse.parse_qsl(raw.decode()))
        ts = form.get("timestamp", "0")
        want = hashlib.sha1(f"{form.get('id')}:{ARGS.salt}:{ts}".encode()).hexdigest()
        fresh = abs(time.time() - int(ts)) < 300
        if not fresh or not hmac.compare_digest(want, form.get("token", "")):
            return self.answer(403, b"<h1>403</h1>", "text/html")
        page = f"<html><body><div id=\"heroku-header\"></div><h1>pyprov {form['id']}</h1><p>{form.get('email')}</p></body></html>"
        self.answer(
            200,
            page.encode(),
            "text/html",
            [("Set-Cookie", f"heroku-nav-data={form.get('nav-data', '')}; Path=/")],
        )


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--salt", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--slow", type=float, default=5.0)
    ARGS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
