#!/usr/bin/env bash
# The whole add-on lifecycle on the embedded SQLite default, step by step,
# as a newcomer would type it. Installs what it needs (the wasm32-wasip2
# target), builds the host and the example add-ons, then runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

export ADDONHOST_DATA="${ADDONHOST_DATA:-.addonhost}"
export ADDONHOST_PLUGINS="${ADDONHOST_PLUGINS:-plugins}"
# The mailer example calls its partner's backend on the loopback; a
# manifest alone never opens a loopback or private address: the operator
# grants it (docs/security.md, Outbound HTTP).
export ADDONHOST_OUTBOUND_GRANT="${ADDONHOST_OUTBOUND_GRANT:-mailer=http://127.0.0.1:9025}"
APP="${DEMO_APP:-demo}"

say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
run() { printf '\033[36m$ addonhost %s\033[0m\n' "$*"; "$ADDONHOST" "$@"; }

say "Setting up: the wasm32-wasip2 target and a build of addonhost"
rustup target add wasm32-wasip2 >/dev/null
cargo build --quiet -p addonhost-cli
ADDONHOST=target/debug/addonhost

say "Building the example add-ons into WASM components: kv and exceptions (Rust), queue (Python), flags (JavaScript)"
echo "(the first build installs componentize-py and componentize-js into ~/.cache/addonhost)"
run plugins:build

# Resource URLs point at the server the demo starts.
export ADDONHOST_URL="http://127.0.0.1:${PORT:-5000}"

if "$ADDONHOST" apps:info -a "$APP" >/dev/null 2>&1; then
  say "Removing the app left by an earlier demo"
  run apps:destroy -a "$APP" --confirm "$APP"
fi

say "The add-on catalog: each service is a sandboxed plugin (compiled once, then cached)"
run plugins
run addons:services
run addons:plans kv

say "1. Create an app (release v1)"
run apps:create "$APP"

say "2. Provision add-ons: the host asks each plugin, validates its answer, sets the config vars"
run addons:create kv:mini -a "$APP"
run addons:create exceptions -a "$APP"
run addons:create kv -a "$APP" --as cache
run addons:create queue -a "$APP"
run addons:create flags -a "$APP" -- --environment production

say "   Starting the server in the background, so the add-ons can serve their resources"
ADDONHOST_LOG="${ADDONHOST_LOG:-warn}" "$ADDONHOST" serve --port "${PORT:-5000}" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fs "$ADDONHOST_URL/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { echo "the server did not start (is port ${PORT:-5000} free? set PORT=…)"; exit 1; }
  sleep 0.2
done

say "3. The app's config: each add-on's vars, under its attachment name"
run config -a "$APP"
run config:set LOG_LEVEL=info -a "$APP"
say "   An add-on's var is protected from accidental overwrites:"
run config:set KV_URL=redis://oops -a "$APP" || true

say "4. Consume: processes get the vars in their environment"
run run -a "$APP" -- sh examples/consume.sh

say "5. Change plan, rotate credentials"
run addons:upgrade KV kv:pro -a "$APP"
run addons:rotate KV -a "$APP"
run addons:upgrade FLAGS flags:team -a "$APP"

say "6. Deprovision: exactly that add-on's vars go"
run addons:destroy CACHE -a "$APP" --confirm "$APP"
run addons -a "$APP"
run releases -a "$APP"
run audit -a "$APP" --limit 5

say "7. The server keeps running: JSON API, dashboard, single sign-on, the add-ons' routes"
echo "Dashboard:  $ADDONHOST_URL/   (sign in with the API token below)"
echo "API token:  $("$ADDONHOST" auth:token)"
echo "SSO link:   $("$ADDONHOST" addons:open KV -a "$APP")"
echo "Consume:    $ADDONHOST run -a $APP -- sh examples/consume.sh   (in another terminal)"
echo "State:      $ADDONHOST_DATA/addonhost.db — Ctrl-C stops the server."
wait "$SERVER"
