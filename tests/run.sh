#!/usr/bin/env bash
# Every test of addonhost, from a fresh machine: installs what it needs
# (the wasm32-wasip2 target, Debian's chromium, postgresql and pgbouncer, playwright-core,
# componentize-py and componentize-js), builds the host and the plugins in all three
# languages, then runs the formatting and lint gates, the SDK's tests, the whole test
# suite, the tests where the backend matters again on PostgreSQL, and the
# lifecycle and cluster tests a third time through PgBouncer.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# One build from scratch: incremental caches would only cost time and ~1 GB of disk.
export CARGO_INCREMENTAL=0

step "toolchain: wasm32-wasip2 target"
rustup target add wasm32-wasip2

step "browser toolchain: Debian's chromium and playwright-core (for the dashboard test)"
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

step "Python and Node.js for the Python and JavaScript add-ons (plugins:build installs componentize-py and componentize-js itself)"
if ! python3 -m venv --help >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv nodejs npm >/dev/null
fi

step "curl and jq (the service-broker example script)"
if ! command -v jq >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl jq >/dev/null
fi

step "PostgreSQL: Debian's postgresql and a throwaway cluster on a free port (the cluster tests and the second pass)"
eval "$(tests/postgres.sh start --owner-pid $$)"
export ADDONHOST_TEST_PG ADDONHOST_TEST_PG_DIR
trap 'tests/postgres.sh remove "$ADDONHOST_TEST_PG_DIR"' EXIT

step "format"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)
(cd tests/plugins && cargo fmt --all -- --check)
(cd examples/extism-bench && cargo fmt --all -- --check)
(cd examples/extism-bench/plugin && cargo fmt --all -- --check)
(cd examples/minimal-addon && cargo fmt --all -- --check)

step "build the host, its tests and benchmarks"
# All targets at once: the dev-dependencies change a few features (regex-syntax), so
# building the binaries alone first would build the host crate twice.
cargo build --workspace --all-targets

step "build the plugins: Rust, Python, JavaScript (addonhost plugins:build)"
ADDONHOST_PLUGINS="plugins:tests/plugins" target/debug/addonhost plugins:build

step "lint"
cargo clippy --workspace --all-targets -- -D warnings
# The library as an embedder that wants SQLite only builds it.
cargo clippy -p addonhost --no-default-features -- -D warnings

step "docs: rustdoc with warnings as errors (broken links, private items)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --lib

step "SDK tests (native): the Rust SDK and the SSO crate it shares with the host"
host_triple=$(rustc -vV | sed -n 's/^host: //p')
cargo test --manifest-path plugins/Cargo.toml -p addonhost-sso -p addonhost-sdk --target "$host_triple"

step "test suite (SQLite, the embedded default; the cluster tests on PostgreSQL)"
cargo test --workspace

step "the tests where the backend matters, again with all state in PostgreSQL"
ADDONHOST_TEST_BACKEND=postgres cargo test -p addonhost-cli --test all -- \
  lifecycle:: ownership:: rotation:: server:: crash:: config:: races:: osb:: isolation::

step "the lifecycle and the cluster tests again, through PgBouncer in transaction pooling (Debian's pgbouncer)"
eval "$(tests/postgres.sh pgbouncer "$ADDONHOST_TEST_PG_DIR" --owner-pid $$)"
ADDONHOST_TEST_BACKEND=postgres ADDONHOST_TEST_PGBOUNCER="$ADDONHOST_TEST_PGBOUNCER" \
  cargo test -p addonhost-cli --test all -- lifecycle:: cluster::

step "benchmark smoke run, Extism baseline included (the full run: see README, Performance)"
target/debug/bench --quick --extism
