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

# Queue work for a worker, then take it (QUEUE_URL: the Python add-on).
if [ -n "${QUEUE_URL:-}" ]; then
  curl -fsS -X POST --data-binary "resize image 42" "$QUEUE_URL/messages" >/dev/null
  echo "queued, then popped: $(curl -fsS -X POST "$QUEUE_URL/messages/pop")"
fi

# Switch a feature on and read it back (FLAGS_URL: the JavaScript add-on).
if [ -n "${FLAGS_URL:-}" ]; then
  curl -fsS -X PUT -d '{"enabled": true}' "$FLAGS_URL/flags/new-checkout" >/dev/null
  echo "flag in ${FLAGS_ENVIRONMENT:-?}: $(curl -fsS "$FLAGS_URL/flags/new-checkout")"
fi

# Report an exception to the tracker.
curl -fsS -X POST -H 'content-type: application/json' \
  -d '{"error":"ZeroDivisionError","where":"consume.sh"}' \
  "$EXCEPTIONS_URL/exceptions" >/dev/null
echo "exception reported"
