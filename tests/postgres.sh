#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, on a free port of 127.0.0.1.
#
#   tests/postgres.sh start [--owner-pid PID]
#       Installs Debian's postgresql if it is missing, runs initdb in a new
#       temporary dir (as the unprivileged `postgres` user when run as root:
#       the server refuses to run as root) and starts the server. Prints
#       shell assignments: ADDONHOST_TEST_PG (a superuser URL without a
#       database) and ADDONHOST_TEST_PG_DIR. With --owner-pid, the cluster
#       is stopped and removed once that process exits.
#   tests/postgres.sh stop DIR       stops the cluster in DIR, for a while
#   tests/postgres.sh restart DIR    starts it again, on the same port
#   tests/postgres.sh remove DIR     stops it and deletes DIR
set -euo pipefail

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  if command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return 0
  fi
  return 1
}

install() {
  if find_bin >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL is not installed and this is not root: install Debian's postgresql package" >&2
    exit 1
  fi
  echo "installing Debian's postgresql" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local owner=""
  if [ "${1:-}" = "--owner-pid" ]; then
    owner="$2"
  fi
  install
  local bin dir port
  bin=$(find_bin)
  dir=$(mktemp -d /tmp/addonhost-pg.XXXXXX)
  chmod 755 "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
  fi
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  port=$(free_port)
  cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 500
EOF
  echo "$port" >"$dir/port"
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
    { cat "$dir/server.log" >&2; exit 1; }
  if [ -n "$owner" ]; then
    # Stopped and removed when the process that asked for it is gone.
    setsid bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; '$0' remove '$dir'" \
      >/dev/null 2>&1 </dev/null &
  fi
  echo "ADDONHOST_TEST_PG=postgres://postgres@127.0.0.1:$port"
  echo "ADDONHOST_TEST_PG_DIR=$dir"
}

stop() {
  local bin
  bin=$(find_bin)
  as_owner "$bin/pg_ctl" -D "$1/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

restart() {
  local bin
  bin=$(find_bin)
  as_owner "$bin/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 60 start >/dev/null ||
    { cat "$1/server.log" >&2; exit 1; }
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop "$2" ;;
  restart) restart "$2" ;;
  remove) stop "$2"; rm -rf "$2" ;;
  *) echo "usage: $0 start [--owner-pid PID] | stop DIR | restart DIR | remove DIR" >&2; exit 2 ;;
esac
