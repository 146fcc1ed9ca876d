#!/bin/sh
# What a platform (a Cloud Foundry cloud controller, a Kubernetes service
# catalog) does with addonhost's service broker, as plain curl requests:
# read the catalog, provision the kv add-on, bind, use the credentials
# against the add-on's own route, rotate the binding, unbind, deprovision.
#
#   eval "$(addonhost osb:credentials --json | jq -r '"OSB_URL=\(.url) OSB_USER=\(.username) OSB_PASSWORD=\(.password)"')"
#   OSB_URL=$OSB_URL OSB_USER=$OSB_USER OSB_PASSWORD=$OSB_PASSWORD sh examples/osb-platform.sh
#
# Needs curl and jq. Ids are fixed, so a second run starts by cleaning up
# what an interrupted one left.
set -eu
: "${OSB_URL:?the broker URL, e.g. http://127.0.0.1:5000/osb}"
: "${OSB_USER:?the broker username (addonhost osb:credentials)}"
: "${OSB_PASSWORD:?the broker password (addonhost osb:credentials)}"
command -v jq >/dev/null || { echo "osb-platform.sh needs jq" >&2; exit 2; }

INSTANCE=osb-example-cache
# Who asks, as Cloud Foundry says it: base64 of {"user_id": "…"}.
IDENTITY="cloudfoundry $(printf '{"user_id":"osb-example"}' | base64 | tr -d '\n')"

# broker METHOD PATH [BODY]: prints the body, then the status on a last line.
broker() {
  curl -sS -X "$1" -u "$OSB_USER:$OSB_PASSWORD" \
    -H 'X-Broker-API-Version: 2.17' \
    -H "X-Broker-API-Originating-Identity: $IDENTITY" \
    -H 'Content-Type: application/json' \
    ${3:+--data "$3"} -w '\n%{http_code}' "$OSB_URL$2"
}
# expect STATUS WHAT RESPONSE: the response's status must be STATUS; prints
# its body.
expect() {
  got=$(printf '%s\n' "$3" | tail -n 1)
  answer=$(printf '%s\n' "$3" | sed '$d')
  if [ "$got" != "$1" ]; then
    echo "$2: expected $1, got $got: $answer" >&2
    exit 1
  fi
  printf '%s\n' "$answer"
}

catalog=$(expect 200 "catalog" "$(broker GET /v2/catalog)")
SERVICE=$(printf '%s' "$catalog" | jq -r '.services[] | select(.name == "kv") | .id')
PLAN=$(printf '%s' "$catalog" | jq -r '.services[] | select(.name == "kv") | .plans[] | select(.name == "mini") | .id')
[ -n "$SERVICE" ] && [ -n "$PLAN" ] || { echo "kv/mini is not in the catalog" >&2; exit 1; }
echo "catalog: kv is service $SERVICE, plan mini is $PLAN"
IDS="service_id=$SERVICE&plan_id=$PLAN"

# Left over from an interrupted run (200 or 410 are both fine).
broker DELETE "/v2/service_instances/$INSTANCE?$IDS" >/dev/null

# `cf create-service kv mini cache` in org example, space example.
request=$(jq -nc --arg s "$SERVICE" --arg p "$PLAN" '{service_id: $s, plan_id: $p,
  organization_guid: "example-org", space_guid: "example-space",
  context: {platform: "cloudfoundry", organization_guid: "example-org",
            space_guid: "example-space", instance_name: "cache"}}')
expect 201 "provision" "$(broker PUT "/v2/service_instances/$INSTANCE?accepts_incomplete=true" "$request")" >/dev/null
expect 200 "the same provisioning again" "$(broker PUT "/v2/service_instances/$INSTANCE?accepts_incomplete=true" "$request")" >/dev/null
echo "provisioned $INSTANCE (and a retry answered 200)"

# `cf bind-service shop cache`.
bind() {
  jq -nc --arg s "$SERVICE" --arg p "$PLAN" --arg pred "${1:-}" '{service_id: $s, plan_id: $p,
    bind_resource: {app_guid: "shop"}} + (if $pred == "" then {} else {predecessor_binding_id: $pred} end)'
}
old=$(expect 201 "bind" "$(broker PUT "/v2/service_instances/$INSTANCE/service_bindings/shop-1" "$(bind)")")
OLD_URL=$(printf '%s' "$old" | jq -r '.credentials.KV_URL')
echo "bound shop-1: credentials hold $(printf '%s' "$old" | jq -r '.credentials | keys | join(", ")')"

# The app uses them: KV_URL carries its own credentials.
curl -fsS -X PUT --data-binary "hello from the platform" "$OLD_URL/greeting" >/dev/null
echo "read back: $(curl -fsS "$OLD_URL/greeting")"

# The platform rotates the binding (OSB 2.17): new credentials, the old ones
# keep working until the add-on's grace window ends.
new=$(expect 201 "rotate" "$(broker PUT "/v2/service_instances/$INSTANCE/service_bindings/shop-2" "$(bind shop-1)")")
NEW_URL=$(printf '%s' "$new" | jq -r '.credentials.KV_URL')
[ "$NEW_URL" != "$OLD_URL" ] || { echo "rotation handed out the same credentials" >&2; exit 1; }
echo "rotated to shop-2: read with the new credentials: $(curl -fsS "$NEW_URL/greeting")"
echo "the old ones still work: $(curl -fsS "$OLD_URL/greeting")"
expires=$(expect 200 "fetch shop-1" "$(broker GET "/v2/service_instances/$INSTANCE/service_bindings/shop-1")" |
  jq -r '.metadata.expires_at')
echo "shop-1's credentials expire at $expires"

# Unbind both, deprovision; a second deprovisioning finds nothing (410).
for b in shop-1 shop-2; do
  expect 200 "unbind $b" "$(broker DELETE "/v2/service_instances/$INSTANCE/service_bindings/$b?$IDS")" >/dev/null
done
expect 200 "deprovision" "$(broker DELETE "/v2/service_instances/$INSTANCE?$IDS")" >/dev/null
expect 410 "deprovision again" "$(broker DELETE "/v2/service_instances/$INSTANCE?$IDS")" >/dev/null
echo "unbound and deprovisioned (and a second deprovisioning answered 410)"
