"""The SDK for writing addonhost add-ons in Python.

`addonhost plugins:build` puts this module on the Python path when it runs
componentize-py, so an add-on's `app.py` just does `import addonhost`.

An add-on is a module (`app.py`) defining three classes named after the
interfaces of the `addon` world, plus `IncomingHandler` if it serves HTTP:

    import addonhost
    from wit_world import exports

    class Lifecycle(exports.Lifecycle):
        def provision(self, request): ...
        def deprovision(self, id): ...
        def change_plan(self, id, plan): ...

    class Credentials(exports.Credentials):
        def rotate(self, id): ...

    class Sso(exports.Sso):
        def verify(self, login):
            reason = addonhost.check_login(login)
            return addonhost.denied(reason) if reason else addonhost.session(login.email, "/")

    IncomingHandler = addonhost.http_handler(handle)   # optional

Every call runs in a fresh instance: keep state in `addonhost.store`, never
in module globals.
"""

import hashlib
import hmac
import inspect
import json
import linecache
import os
import secrets
import string
import sys
import time
import traceback
from urllib.parse import parse_qsl

from componentize_py_types import Err, Ok
from wit_world.exports.lifecycle import (
    Pending,
    Provisioned,
    ProvisionResult_Pending,
    ProvisionResult_Provisioned,
)
from wit_world.exports.sso import Session, Verdict_Denied, Verdict_Ok
from wit_world.imports import config, kv
from wit_world.imports import log as _log

try:  # the `addon` world
    from wit_world.imports.types import AddonError
except ImportError:  # `addon-http`, where wasi:http's `types` takes the name
    from wit_world.imports.addonhost_addon_types import AddonError

# Imported now, while componentize-py snapshots the component: at call time
# the sandbox has no files to import from. Present in the worlds that import
# the outgoing handler, which the build picks when app.py calls `fetch(`.
try:
    from wit_world.imports import outgoing_handler as _outgoing_handler
    from wit_world.imports import wasi_http_types as _http_types
    from wit_world.imports.streams import StreamError_Closed as _StreamClosed
except ImportError:
    _outgoing_handler = _http_types = _StreamClosed = None

__all__ = [
    "MANIFEST",
    "MAX_AGE_SECONDS",
    "MAX_SKEW_SECONDS",
    "FetchError",
    "Request",
    "Response",
    "Rotating",
    "check_login",
    "config",
    "denied",
    "error",
    "escape",
    "fetch",
    "grace_from_options",
    "hex_id",
    "http_handler",
    "info",
    "now",
    "pending",
    "provisioned",
    "secret",
    "session",
    "store",
    "token",
    "warn",
]

# Oldest accepted SSO timestamp, in seconds before now.
MAX_AGE_SECONDS = 5 * 60
# Furthest accepted SSO timestamp, in seconds after now (clock skew).
MAX_SKEW_SECONDS = 60


def _load_manifest():
    # The module is imported while componentize-py snapshots the component,
    # when the add-on's folder is readable (it is first on the Python path):
    # the manifest is read once then and frozen into the component. (A
    # development build's loader finds an empty one there, and fills this
    # dict from the add-on's sources at each call.)
    for folder in sys.path:
        path = os.path.join(folder, "addon-manifest.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    raise RuntimeError("addon-manifest.json not found next to the add-on's app.py")


MANIFEST = _load_manifest()


# ---- results ------------------------------------------------------------------


def error(message):
    """An error for the user: `raise addonhost.error("plan x is unknown")`."""
    return Err(AddonError(message=str(message)))


def provisioned(id, config, message=None):
    """The resource exists: its id and config vars (manifest names)."""
    return ProvisionResult_Provisioned(
        Provisioned(id=id, config=list(config.items()) if isinstance(config, dict) else list(config), message=message)
    )


def pending(id, message=None):
    """The resource is being made; complete it later with `config.complete`."""
    return ProvisionResult_Pending(Pending(id=id, message=message))


def session(user, landing):
    """An accepted SSO login: who, and the dashboard path to land on."""
    return Verdict_Ok(Session(user=user, landing=landing))


def denied(reason):
    """A refused SSO login (the browser gets a 403)."""
    return Verdict_Denied(str(reason))


# ---- time, secrets, logging ---------------------------------------------------


def now():
    """Unix seconds from the WASI wall clock."""
    return int(time.time())


_ALPHABET = string.ascii_letters + string.digits


def secret(length=32):
    """A random alphanumeric secret (from WASI's secure random source)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hex_id(nbytes=6):
    """A random lowercase hex id of `nbytes` bytes."""
    return secrets.token_hex(nbytes)


def info(message):
    _log.log(_log.Level.INFO, str(message))


def warn(message):
    _log.log(_log.Level.WARN, str(message))


# ---- SSO ----------------------------------------------------------------------


def token(id, salt, timestamp):
    """hex(sha1("<id>:<salt>:<timestamp>")), the platform's SSO token."""
    return hashlib.sha1(f"{id}:{salt}:{timestamp}".encode()).hexdigest()


def check_login(login, salt=None, at=None):
    """Why an SSO login must be refused, or None when it is good.

    Checks the freshness window (five minutes old to one minute ahead), then
    `token` and `resource_token`, comparing in constant time."""
    salt = MANIFEST["api"]["sso_salt"] if salt is None else salt
    at = now() if at is None else at
    if login.timestamp < at - MAX_AGE_SECONDS:
        return f"timestamp is {at - login.timestamp} s old (at most {MAX_AGE_SECONDS} s accepted)"
    if login.timestamp > at + MAX_SKEW_SECONDS:
        return f"timestamp is {login.timestamp - at} s in the future (at most {MAX_SKEW_SECONDS} s accepted)"
    if not _ct_eq(token(login.id, salt, login.timestamp), login.token.lower()):
        return "token does not match"
    if not _ct_eq(token(login.resource_id, salt, login.timestamp), login.resource_token.lower()):
        return "resource_token does not match"
    return None


def _ct_eq(a, b):
    # As bytes: compare_digest raises TypeError on str with non-ASCII
    # characters, and a posted token may hold any; a forged login must be
    # denied, not fail the call.
    return hmac.compare_digest(a.encode(), b.encode())


# ---- credentials --------------------------------------------------------------


class Rotating:
    """A secret with the one it replaced, which stays valid until
    `previous_expires_at` so processes started before a rotation keep working
    until they restart. Stored as a plain dict (`to_dict`/`from_dict`)."""

    def __init__(self, current, previous=None, previous_expires_at=None, rotated_at=None):
        self.current = current
        self.previous = previous
        self.previous_expires_at = previous_expires_at
        self.rotated_at = rotated_at

    def rotate(self, next_secret, at, grace_seconds):
        self.previous, self.current = self.current, next_secret
        self.previous_expires_at = at + grace_seconds
        self.rotated_at = at

    def accepts(self, candidate, at):
        if hmac.compare_digest(self.current.encode(), candidate.encode()):
            return True
        if self.previous is None or self.previous_expires_at is None:
            return False
        return at <= self.previous_expires_at and hmac.compare_digest(self.previous.encode(), candidate.encode())

    def to_dict(self):
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


def grace_from_options(options, default=None):
    """The grace window asked for with `-- --grace_seconds N` (0 to 7 days),
    or the manifest's `rotation.grace_seconds`."""
    if default is None:
        default = MANIFEST.get("rotation", {}).get("grace_seconds", 3600)
    for k, v in options:
        if k in ("grace_seconds", "grace-seconds"):
            if v.isdigit() and 0 <= int(v) <= 7 * 86400:
                return int(v)
            raise error(f"--grace_seconds {v!r} must be 0 to 604800")
    return default


# ---- the private store ----------------------------------------------------------


class _Store:
    """The add-on's private key-value store, values as JSON."""

    def get(self, key, default=None):
        raw = kv.get(key)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except ValueError as e:
            # Corrupt state is an error, never silently replaced.
            raise error(f"stored record {key} is unreadable: {e}")

    def put(self, key, value):
        try:
            kv.set(key, json.dumps(value).encode())
        except Err as e:
            raise error(e.value)

    def delete(self, key):
        kv.delete(key)

    def keys(self, prefix):
        """Every key starting with prefix, in order (list_keys answers at
        most 1,000 at a time: the rest is paged with list_keys_after)."""
        keys = kv.list_keys(prefix)
        while keys and len(keys) % 1000 == 0:
            page = kv.list_keys_after(prefix, keys[-1], 1000)
            if not page:
                break
            keys.extend(page)
        return keys

    def count(self, prefix):
        """How many keys start with prefix."""
        return kv.count_keys(prefix)

    def delete_prefix(self, prefix):
        while True:
            keys = kv.list_keys(prefix)
            if not keys:
                break
            for key in keys:
                kv.delete(key)


store = _Store()


# ---- HTTP ---------------------------------------------------------------------

USER_HEADER = "x-addonhost-user"
RESOURCE_HEADER = "x-addonhost-resource"
MAX_BODY = 1 << 20


def escape(s):
    """HTML-escapes text for the add-on's pages."""
    return (
        str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")
    )


class Request:
    """An HTTP request, read whole. `path` is relative to the add-on's base URL."""

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v.decode("utf-8", "replace")
        return None

    def segments(self):
        return [s for s in self.path.split("/") if s]

    def params(self):
        return dict(parse_qsl(self.query))

    def form(self):
        return dict(parse_qsl(self.body.decode("utf-8", "replace")))

    def json(self):
        return json.loads(self.body or b"null")

    def bearer(self):
        value = self.header("authorization") or ""
        return value[7:].strip() if value[:7].lower() == "bearer " else None

    def session(self):
        """(user, resource id) after SSO, as the host vouches for them."""
        user, resource = self.header(USER_HEADER), self.header(RESOURCE_HEADER)
        return (user, resource) if user and resource else None


class Response:
    def __init__(self, status, body=b"", content_type="text/plain; charset=utf-8", headers=None):
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        if content_type is None or any(k.lower() == "content-type" for k, _ in headers or []):
            self.headers = list(headers or [])
        else:
            self.headers = [("content-type", content_type)] + list(headers or [])

    def header(self, name):
        """The first header of that name, or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json_body(self):
        return json.loads(self.body)

    @classmethod
    def text(cls, status, body):
        return cls(status, body)

    @classmethod
    def html(cls, status, body):
        return cls(status, body, "text/html; charset=utf-8")

    @classmethod
    def json(cls, status, value):
        return cls(status, json.dumps(value), "application/json")

    @classmethod
    def redirect(cls, location):
        return cls(303, b"", headers=[("location", location)])


class FetchError(Err):
    """A request that got no response: the host refused it (a host the
    manifest does not declare, a private address, the call's budget), the
    network failed, or it ran out of time or bytes. The message says which.

    It is an `addonhost.error`: left uncaught in an export, it fails the call
    with that message."""

    def __init__(self, message):
        super().__init__(AddonError(message=str(message)))
        self.message = str(message)

    def __str__(self):
        return self.message


def fetch(url, method="GET", headers=None, body=b"", redirects=5):
    """Calls the partner's backend over wasi:http/outgoing-handler, blocking
    until the whole response is read; answers a `Response` (status, headers,
    body bytes) or raises `FetchError` with the host's reason.

    The host sends it only to a host the manifest's `outbound.allowed_hosts`
    declares. Up to `redirects` redirects are followed as new requests (which
    the host checks like any), without `authorization` or `cookie` when the
    origin changes. `app.py` calling `fetch(` makes the build pick a world
    that imports the outgoing handler."""
    headers = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
    body = body.encode() if isinstance(body, str) else bytes(body)
    method = method.upper()
    for _ in range(redirects + 1):
        response = _fetch_once(url, method, headers, body)
        location = response.header("location")
        if response.status not in (301, 302, 303, 307, 308) or not location or redirects == 0:
            return response
        redirects -= 1
        nxt = _join(url, location)
        if nxt is None:
            raise FetchError(f"{url}: redirected to {location!r}, which is not an http(s) URL")
        if _split(nxt)[:2] != _split(url)[:2]:
            headers = [(k, v) for k, v in headers if k.lower() not in ("authorization", "cookie")]
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, body = "GET", b""
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
        url = nxt
    return response


def _split(url):
    """(scheme, authority, path-and-query) of an http(s) URL, or None."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    end = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0] or [len(rest)])
    authority, path = rest[:end], rest[end:].split("#")[0]
    return (scheme.lower(), authority.lower(), path) if authority else None


def _join(base, location):
    if _split(location):
        return location
    parts = _split(base)
    if parts and location.startswith("//"):
        return f"{parts[0]}:{location}"
    if parts and location.startswith("/"):
        return f"{parts[0]}://{parts[1]}{location}"
    return None


def _error_text(e):
    value = getattr(e, "value", e)
    if type(value).__name__ == "ErrorCode_InternalError" and value.value:
        return value.value
    return repr(value)


def _fetch_once(url, method, headers, body):
    if _outgoing_handler is None:
        raise FetchError(
            "this component does not import wasi:http/outgoing-handler: "
            "call addonhost.fetch( in app.py itself so the build picks a world with it"
        )
    outgoing_handler, t, StreamError_Closed = _outgoing_handler, _http_types, _StreamClosed
    parts = _split(url)
    if parts is None:
        raise FetchError(f"{url}: not an http:// or https:// URL")
    scheme, authority, path = parts
    fields = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]
    # Every method but GET and HEAD gets a length, even for no body (a
    # DELETE would otherwise go out chunked).
    if body or method not in ("GET", "HEAD"):
        if not any(k.lower() == "content-length" for k, _ in headers):
            fields.append(("content-length", str(len(body)).encode()))
    request = t.OutgoingRequest(t.Fields.from_list(fields))
    known = {"GET": t.Method_Get(), "HEAD": t.Method_Head(), "POST": t.Method_Post(),
             "PUT": t.Method_Put(), "DELETE": t.Method_Delete(), "PATCH": t.Method_Patch(),
             "OPTIONS": t.Method_Options()}
    request.set_method(known.get(method) or t.Method_Other(method))
    request.set_scheme(t.Scheme_Https() if scheme == "https" else t.Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query(path or "/")
    outgoing = request.body()
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        raise FetchError(_error_text(e)) from None
    writer = outgoing.write()
    for i in range(0, len(body), 4096):
        writer.blocking_write_and_flush(body[i : i + 4096])
    writer.__exit__(None, None, None)
    t.OutgoingBody.finish(outgoing, None)
    while True:
        answer = future.get()
        if answer is not None:
            break
        future.subscribe().block()
    if isinstance(answer, Err) or isinstance(answer.value, Err):
        raise FetchError(_error_text(answer.value if isinstance(answer, Err) else answer.value))
    incoming = answer.value.value
    status = incoming.status()
    response_headers = [(k, v.decode("utf-8", "replace")) for k, v in incoming.headers().entries()]
    data = b""
    # The stream is the body's child: the body must outlive it, and both are
    # dropped explicitly, child first.
    body_in = incoming.consume()
    stream = body_in.stream()
    try:
        while True:
            data += stream.blocking_read(65536)
    except Err as e:
        if not isinstance(e.value, StreamError_Closed):
            text = e.value.value.to_debug_string()
            raise FetchError(text.removeprefix("internal error: ").strip()) from None
    finally:
        stream.__exit__(None, None, None)
        body_in.__exit__(None, None, None)
    return Response(status, data, content_type=None, headers=response_headers)


def _method_name(m):
    name = type(m).__name__
    if name == "Method_Other":
        return m.value
    return name.removeprefix("Method_").upper()


def http_handler(handle):
    """Makes `handle(Request) -> Response` the component's wasi:http handler:
    `IncomingHandler = addonhost.http_handler(handle)` in app.py."""
    from wit_world import exports
    from wit_world.imports import wasi_http_types as t
    from wit_world.imports.streams import StreamError_Closed

    class IncomingHandler(exports.IncomingHandler):
        def handle(self, request, response_out):
            path_query = request.path_with_query() or "/"
            path, _, query = path_query.partition("?")
            headers = request.headers().entries()
            body = b""
            incoming = request.consume()
            stream = incoming.stream()
            try:
                while len(body) <= MAX_BODY:
                    body += stream.blocking_read(65536)
            except Err as e:
                if not isinstance(e.value, StreamError_Closed):
                    raise
            finally:
                stream.__exit__(None, None, None)
            try:
                if len(body) > MAX_BODY:
                    resp = Response.text(413, "request body too large\n")
                else:
                    resp = handle(Request(_method_name(request.method()), path, query, headers, body))
            except Exception as e:  # a bug in the add-on answers 500, not a trap
                # The traceback's last frames go to the log, for the author.
                _log.log(_log.Level.ERROR, "http handler failed: " + _traceback_text(e).rstrip())
                resp = Response.text(500, "internal error\n")
            out = t.OutgoingResponse(t.Fields.from_list([(k, v.encode()) for k, v in resp.headers]))
            out.set_status_code(resp.status)
            out_body = out.body()
            t.ResponseOutparam.set(response_out, Ok(out))
            writer = out_body.write()
            data = resp.body
            for i in range(0, len(data), 4096):
                writer.blocking_write_and_flush(data[i : i + 4096])
            writer.__exit__(None, None, None)
            t.OutgoingBody.finish(out_body, None)

    return IncomingHandler


# ---- errors that point at the author's line ----------------------------------

# Files that are not the author's: this SDK, the build's entry and dev
# loader, the standard library, componentize-py's bindings.
_NOT_THE_AUTHORS = ("addonhost.py", "addonhost_entry.py", "addonhost_dev.py")


def _short(filename):
    # componentize-py maps the add-on's folder to `/0`, `/1`, ...: the
    # author knows the file as `app.py`.
    parts = filename.split("/")
    if len(parts) > 2 and parts[0] == "" and parts[1].isdigit():
        return "/".join(parts[2:])
    return filename


def _is_authors(filename):
    name = filename.rsplit("/", 1)[-1]
    return not (
        name in _NOT_THE_AUTHORS
        or filename.startswith(("<", "/python", "/world", "/bundled"))
        or "componentize_py" in filename
    )


def _traceback_text(exc):
    """The exception with the last frames of the author's code, in the
    standard traceback format (file, line, code)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_authors(f.filename)]
    for f in frames:
        f.filename = _short(f.filename)
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames[-8:])
    for line in traceback.format_exception_only(type(exc), exc):
        lines.append(line.replace('"/0/', '"').replace('"/1/', '"'))
    return "".join(lines)


def _report(exc):
    # Written to stderr, where the host reads a crashed call's last words.
    sys.stderr.write(_traceback_text(exc))
    sys.stderr.flush()


def _guard(fn):
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Err:
            raise
        except BaseException as e:
            _report(e)
            raise

    guarded.__name__ = getattr(fn, "__name__", "guarded")
    guarded.__qualname__ = getattr(fn, "__qualname__", guarded.__name__)
    return guarded


def _guarded_class(cls):
    """`cls` with every public method reporting an exception's traceback
    before it escapes (componentize-py aborts the call on it, silently)."""
    methods = {
        name: _guard(getattr(cls, name))
        for name in dir(cls)
        if not name.startswith("_") and inspect.isfunction(getattr(cls, name))
    }
    return type(cls.__name__, (cls,), methods)


def _keep_sources():
    """Keeps the author's modules' lines for tracebacks: the component has
    no files once built. (Entries without a modification time are never
    checked against a file.)"""
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None) or ""
        if filename.endswith(".py") and _is_authors(filename):
            lines = linecache.getlines(filename)
            if lines:
                linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)

