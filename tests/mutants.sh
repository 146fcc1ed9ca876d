#!/usr/bin/env bash
# Mutation testing of the modules whose mistakes are security bugs, with
# cargo-mutants (installed from crates.io if missing). Not part of CI or of
# tests/run.sh: each mutant is a rebuild and a test run, which takes long.
#
#   tests/mutants.sh sso        the SSO check (plugins/sso), its own unit tests, native
#   tests/mutants.sh outbound   outbound address classification and allow-list
#                               matching (host/addonhost/src/outbound.rs), the
#                               library's unit tests
#   tests/mutants.sh all        both (the default)
#
# MUTANTS_TIMEOUT (seconds, default 120) bounds each mutant's test run; a
# mutant past it counts as a timeout. More cargo-mutants options after `--`
# (e.g. `tests/mutants.sh outbound -- --re 'fn classify'`). The figures of
# the last full run are in docs/internals.md ("Mutation testing").
#
# Mutants are applied in place (`--in-place`): the warm target/ is reused
# instead of building a copy of the tree from scratch. An interrupted run can
# leave one mutant in the source: check `git diff` afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
shift || true
[ "${1:-}" = "--" ] && shift
timeout=${MUTANTS_TIMEOUT:-120}

if ! cargo mutants --version >/dev/null 2>&1; then
  cargo install cargo-mutants --locked
fi
host_triple=$(rustc -vV | sed -n 's/^host: //p')

run_sso() {
  # plugins/ builds for wasm32-wasip2 by default; the SSO crate's tests run natively.
  (cd plugins && cargo mutants --in-place --package addonhost-sso \
    --timeout "$timeout" --output ../target/mutants-sso \
    --cargo-arg="--target=$host_triple" "$@")
}

run_outbound() {
  # Only the library's unit tests (`cargo test -p addonhost --lib`): the
  # module is pure, and its tests are beside it.
  cargo mutants --in-place --package addonhost --file host/addonhost/src/outbound.rs \
    --timeout "$timeout" --output target/mutants-outbound "$@" -- --lib
}

status=0
case "$what" in
  sso) run_sso "$@" || status=$? ;;
  outbound) run_outbound "$@" || status=$? ;;
  all)
    run_sso "$@" || status=$?
    run_outbound "$@" || status=$?
    ;;
  *)
    echo "usage: tests/mutants.sh [sso|outbound|all] [-- cargo-mutants options]" >&2
    exit 2
    ;;
esac
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts.
exit "$status"
