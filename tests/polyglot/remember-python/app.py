"""A test-only add-on that tries to remember earlier calls.

`GET /remember` reports what it finds of earlier calls, then leaves as much
behind for the next one: a module-level counter, a 4 MiB buffer made when the
module was loaded (so it lives in the snapshot's heap, every byte 7), and
1 MiB objects kept in a module-level list. With a fresh instance per call
every report is all zeros.
"""

import addonhost
from addonhost import Response
from wit_world import exports

CALLS = 0
IMAGE = bytearray(b"\x07") * (4 << 20)
KEPT = []


class Lifecycle(exports.Lifecycle):
    def provision(self, request):
        return addonhost.provisioned(f"remember-{request.uuid}", [("REMEMBER_PYTHON_URL", request.base_url)])

    def deprovision(self, id):
        pass

    def change_plan(self, id, plan):
        return None


class Credentials(exports.Credentials):
    def rotate(self, id):
        raise addonhost.error("nothing to rotate")


class Sso(exports.Sso):
    def verify(self, login):
        return addonhost.denied("no dashboard")


def handle(req):
    global CALLS
    if req.segments() != ["remember"]:
        return Response.text(404, "not found\n")
    calls_before = CALLS
    CALLS += 1
    image_residue = len(IMAGE) - IMAGE.count(7)
    IMAGE[:] = b"\xa5" * len(IMAGE)
    kept_before = len(KEPT)
    KEPT.append(bytearray(b"\xa5") * (1 << 20))
    return Response.json(
        200,
        {"calls_before": calls_before, "image_residue": image_residue, "kept_before": kept_before},
    )


IncomingHandler = addonhost.http_handler(handle)
