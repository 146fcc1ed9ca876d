"""hello in Python: every HTTP request answers `hello`; the lifecycle answers
at once. See ../README.md."""

import addonhost
from addonhost import Response
from wit_world import exports


class Lifecycle(exports.Lifecycle):
    def provision(self, request):
        return addonhost.provisioned(f"hello-{request.uuid}", [("HELLO_PYTHON_URL", request.base_url)])

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


IncomingHandler = addonhost.http_handler(lambda req: Response.text(200, "hello\n"))
