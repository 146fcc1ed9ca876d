#!/bin/sh
# An app consuming its add-ons (the seed's "Consumption"): it knows nothing
# but the URLs in its environment. Run it through the platform:
#   addonhost run -a APP -- sh examples/consume.sh
set -eu
: "${KV_URL:?attach the kv add-on first}"
: "${EXCEPTIONS_URL:?attach the exceptions add-on first}"

# Write, then read back (the credentials are inside KV_URL).
curl -fsS -X PUT --data-binary "hello from the app" "$KV_URL/greeting" >/dev/null
echo "read back: $(curl -fsS "$KV_URL/greeting")"

# Report an exception to the tracker.
curl -fsS -X POST -H 'content-type: application/json' \
  -d '{"error":"ZeroDivisionError","where":"consume.sh"}' \
  "$EXCEPTIONS_URL/exceptions" >/dev/null
echo "exception reported"
