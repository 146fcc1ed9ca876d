"""The loader of a development build (`addonhost plugins:dev`).

One component per world is built from this module once; the add-on's own
files come from the host at each call (`addonhost:addon/dev`), so an edit
swaps source text instead of rebuilding the component. The exports are the
same as a production build's, guarded the same way.

`plugins:dev` writes `_PRELOAD` below: the standard modules the add-on
imports, imported now while the component is snapshotted (at call time the
sandbox has no standard library files to import from).
"""

import importlib
import importlib.abc
import importlib.util
import json
import linecache
import sys

import addonhost
from wit_world import exports
from wit_world.imports import dev as _dev

_PRELOAD = []  # written by plugins:dev

for _module in _PRELOAD:
    try:
        importlib.import_module(_module)
    except Exception:  # the add-on's own import reports it, at call time
        pass


class _Sources(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the add-on's modules from the files the host handed over."""

    def __init__(self, files):
        self.files = files

    def find_spec(self, name, path=None, target=None):
        rel = name.replace(".", "/")
        for candidate, package in ((rel + ".py", False), (rel + "/__init__.py", True)):
            if candidate in self.files:
                return importlib.util.spec_from_loader(name, self, origin=candidate, is_package=package)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        path = module.__spec__.origin
        text = self.files[path]
        linecache.cache[path] = (len(text), None, text.splitlines(True), path)
        module.__file__ = path
        exec(compile(text, path, "exec"), module.__dict__)


_app = None


def _load():
    global _app
    if _app is None:
        files = dict(_dev.sources())
        addonhost.MANIFEST.clear()
        addonhost.MANIFEST.update(json.loads(files.get("addon-manifest.json", "{}")))
        sys.dont_write_bytecode = True
        sys.meta_path.insert(0, _Sources(files))
        _app = importlib.import_module("app")
    return _app


def _call(interface, method, *args):
    try:
        return getattr(getattr(_load(), interface)(), method)(*args)
    except addonhost.Err:
        raise
    except BaseException as e:
        addonhost._report(e)
        raise


class Lifecycle(exports.Lifecycle):
    def provision(self, request):
        return _call("Lifecycle", "provision", request)

    def deprovision(self, id):
        return _call("Lifecycle", "deprovision", id)

    def change_plan(self, id, plan):
        return _call("Lifecycle", "change_plan", id, plan)


class Credentials(exports.Credentials):
    def rotate(self, id):
        return _call("Credentials", "rotate", id)


class Sso(exports.Sso):
    def verify(self, login):
        return _call("Sso", "verify", login)


if hasattr(exports, "IncomingHandler"):

    class IncomingHandler(exports.IncomingHandler):
        def handle(self, request, response_out):
            return _call("IncomingHandler", "handle", request, response_out)
