"""The entry module of a production build (`addonhost plugins:build`): the
add-on's `app.py`, with its exported classes guarded so that an exception's
traceback — the author's file, line and code — reaches the host before
componentize-py aborts the call."""

import addonhost
import app as _app

addonhost._keep_sources()

for _name in ("Lifecycle", "Credentials", "Sso", "IncomingHandler"):
    if hasattr(_app, _name):
        globals()[_name] = addonhost._guarded_class(getattr(_app, _name))
