#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, on a free port of 127.0.0.1.
#
#   tests/postgres.sh start [--owner-pid PID] [--tls]
#       Installs Debian's postgresql if it is missing, runs initdb in a new
#       temporary dir (as the unprivileged `postgres` user when run as root:
#       the server refuses to run as root) and starts the server. Prints
#       shell assignments: ADDONHOST_TEST_PG (a superuser URL without a
#       database) and ADDONHOST_TEST_PG_DIR. With --owner-pid, the cluster
#       is stopped and removed once that process exits.
#       With --tls: a test CA (DIR/tls/ca.pem) signs the server's certificate
#       (for the name localhost only), the server runs with ssl=on and
#       pg_hba.conf admits TCP clients only over TLS, with a password
#       (ADDONHOST_TEST_PG_PASSWORD; the URL carries none). DIR/tls/other-ca.pem
#       is a CA that signed nothing of the server's.
#   tests/postgres.sh pgbouncer DIR [--owner-pid PID]
#       Installs Debian's pgbouncer if it is missing and starts it in
#       transaction pooling mode in front of the cluster in DIR. Prints
#       ADDONHOST_TEST_PGBOUNCER (a URL like ADDONHOST_TEST_PG's).
#   tests/postgres.sh stop DIR       stops the cluster in DIR, for a while
#   tests/postgres.sh restart DIR    starts it again, on the same port
#   tests/postgres.sh remove DIR     stops it (and its pgbouncer) and deletes DIR
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

# A test CA and a certificate for localhost signed by it, in $1/tls.
make_tls() {
  local tls="$1/tls"
  mkdir -p "$tls"
  command -v openssl >/dev/null 2>&1 || {
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  }
  (
    cd "$tls"
    for ca in ca other-ca; do
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=addonhost test $ca" \
        -keyout "$ca.key" -out "$ca.pem" >/dev/null 2>&1
    done
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout server.key -out server.csr >/dev/null 2>&1
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem >/dev/null 2>&1
    chmod 600 server.key
    chmod 644 ca.pem other-ca.pem
  )
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$tls"
  fi
}

start() {
  local owner="" tls=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --owner-pid) owner="$2"; shift 2 ;;
      --tls) tls=1; shift ;;
      *) echo "start: unknown option $1" >&2; exit 2 ;;
    esac
  done
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
  local password=""
  if [ -n "$tls" ]; then
    make_tls "$dir"
    password="pw-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    cat >>"$dir/data/postgresql.conf" <<EOF
ssl = on
ssl_cert_file = '$dir/tls/server.pem'
ssl_key_file = '$dir/tls/server.key'
EOF
    cat >"$dir/data/pg_hba.conf" <<EOF
local   all all                trust
hostssl all all 127.0.0.1/32   scram-sha-256
hostssl all all ::1/128        scram-sha-256
EOF
  fi
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
    { cat "$dir/server.log" >&2; exit 1; }
  if [ -n "$password" ]; then
    as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -q \
      -c "ALTER USER postgres PASSWORD '$password'" >/dev/null
    echo "ADDONHOST_TEST_PG_PASSWORD=$password"
  fi
  if [ -n "$owner" ]; then
    # Stopped and removed when the process that asked for it is gone.
    setsid bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; '$0' remove '$dir'" \
      >/dev/null 2>&1 </dev/null &
  fi
  echo "ADDONHOST_TEST_PG=postgres://postgres@127.0.0.1:$port"
  echo "ADDONHOST_TEST_PG_DIR=$dir"
}

pgbouncer_start() {
  local dir="$1" owner=""
  shift
  if [ "${1:-}" = "--owner-pid" ]; then
    owner="$2"
  fi
  local exe
  exe=$(command -v pgbouncer || true)
  [ -n "$exe" ] || [ ! -x /usr/sbin/pgbouncer ] || exe=/usr/sbin/pgbouncer
  if [ -z "$exe" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "PgBouncer is not installed and this is not root: install Debian's pgbouncer package" >&2
      exit 1
    fi
    echo "installing Debian's pgbouncer" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    exe=/usr/sbin/pgbouncer
  fi
  local pgport port bouncer
  pgport=$(cat "$dir/port")
  port=$(free_port)
  bouncer="$dir/pgbouncer"
  mkdir -p "$bouncer"
  echo '"postgres" ""' >"$bouncer/userlist.txt"
  cat >"$bouncer/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$pgport

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $bouncer/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 40
server_reset_query =
query_wait_timeout = 5
ignore_startup_parameters = extra_float_digits
logfile = $bouncer/pgbouncer.log
pidfile = $bouncer/pgbouncer.pid
EOF
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$bouncer"
  fi
  as_owner "$exe" -d "$bouncer/pgbouncer.ini" >/dev/null 2>&1 ||
    { cat "$bouncer/pgbouncer.log" >&2; exit 1; }
  local up=""
  for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
      up=1
      break
    fi
    sleep 0.1
  done
  [ -n "$up" ] || { echo "pgbouncer did not start listening on $port" >&2; cat "$bouncer/pgbouncer.log" >&2; exit 1; }
  if [ -n "$owner" ]; then
    setsid bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; '$0' pgbouncer-stop '$dir'" \
      >/dev/null 2>&1 </dev/null &
  fi
  echo "ADDONHOST_TEST_PGBOUNCER=postgres://postgres@127.0.0.1:$port"
}

pgbouncer_stop() {
  local pid
  pid=$(cat "$1/pgbouncer/pgbouncer.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
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
  pgbouncer) shift; pgbouncer_start "$@" ;;
  pgbouncer-stop) pgbouncer_stop "$2" ;;
  stop) stop "$2" ;;
  restart) restart "$2" ;;
  remove) pgbouncer_stop "$2"; stop "$2"; rm -rf "$2" ;;
  *) echo "usage: $0 start [--owner-pid PID] [--tls] | pgbouncer DIR [--owner-pid PID] | stop DIR | restart DIR | remove DIR" >&2; exit 2 ;;
esac
