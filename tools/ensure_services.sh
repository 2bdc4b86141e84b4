#!/usr/bin/env bash
# PostgreSQL and Redis for `make run` and `make test` on this machine (`make services` runs this).
#
# - Answering already: nothing is done.
# - Installed but stopped: started with the machine's own commands (Debian's pg_ctlcluster; redis-server).
# - Not installed: installed with apt when we are root on a Debian-like machine, then started; otherwise the
#   script names exactly what to install and exits 1.
#
# A PostgreSQL this script installs accepts passwords, not trust, on 127.0.0.1, so it also creates a role
# `eventrelay` (CREATEDB) with a generated password and writes DATABASE_URL into .env, which the settings read.
# Only servers on this host are managed: a DATABASE_URL or REDIS_URL naming another host is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379

say() { echo "services: $*"; }

is_root() { [ "$(id -u)" = 0 ]; }

can_apt() { is_root && command -v apt-get >/dev/null 2>&1; }

apt_install() {
  say "installing $* with apt"
  # A machine without a reachable mirror may still hold the packages in apt's cache: try to install anyway.
  apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed; installing from what apt already knows"
  local log
  log=$(mktemp)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    say "apt-get install $* failed"
    exit 1
  fi
  rm -f "$log"
}

postgres_answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
  else
    (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null
  fi
}

redis_answers() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null
  fi
}

wait_for() {
  local what=$1 check=$2
  for _ in $(seq 30); do
    "$check" && return 0
    sleep 1
  done
  say "$what did not answer within 30 s"
  return 1
}

url_of() {
  # $1's value from the environment, else from .env; empty when neither sets it (the defaults are local).
  local url=${!1:-}
  [ -z "$url" ] && url=$(grep -s "^$1=" .env | tail -n 1 | cut -d= -f2- || true)
  echo "$url"
}

host_of() {
  local rest=${1#*://}
  rest=${rest##*@}
  echo "${rest%%[:/?]*}"
}

port_of() {
  local rest=${1#*://}
  rest=${rest##*@}
  rest=${rest%%[/?]*}
  case "$rest" in *:*) echo "${rest##*:}" ;; *) echo "$2" ;; esac
}

url_is_local() {
  local url
  url=$(url_of "$1")
  [ -z "$url" ] && return 0
  case "$(host_of "$url")" in 127.0.0.1 | localhost | "") return 0 ;; *) return 1 ;; esac
}

database_url=$(url_of DATABASE_URL)
[ -n "$database_url" ] && PG_PORT=$(port_of "$database_url" 5432)
redis_url=$(url_of REDIS_URL)
[ -n "$redis_url" ] && REDIS_PORT=$(port_of "$redis_url" 6379)

ensure_postgres() {
  url_is_local DATABASE_URL || { say "DATABASE_URL names another host: not managing PostgreSQL"; return 0; }
  postgres_answers && return 0
  local installed_now=no
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    if ! can_apt; then
      say "PostgreSQL is not installed. Install it (Debian/Ubuntu: sudo apt-get install postgresql), or set"
      say "DATABASE_URL in .env to a PostgreSQL 15+ server you can create databases on."
      exit 1
    fi
    apt_install postgresql
    installed_now=yes
  fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ] || [ ! -d "/etc/postgresql/$version/main" ]; then
    version=${version:-$(ls /usr/lib/postgresql | sort -V | tail -n 1)}
    say "creating the PostgreSQL $version cluster 'main'"
    pg_createcluster "$version" main >/dev/null
  fi
  say "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for PostgreSQL postgres_answers
  if [ "$installed_now" = yes ]; then
    create_database_role
  fi
}

create_database_role() {
  grep -qs '^DATABASE_URL=' .env && return 0
  local password
  password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  su postgres -c "psql -q -v ON_ERROR_STOP=1 -d postgres" <<SQL
CREATE ROLE eventrelay LOGIN CREATEDB PASSWORD '$password';
SQL
  echo "DATABASE_URL=postgres://eventrelay:$password@$PG_HOST:$PG_PORT/eventrelay" >> .env
  say "created the PostgreSQL role 'eventrelay'; DATABASE_URL is in .env"
}

ensure_redis() {
  url_is_local REDIS_URL || { say "REDIS_URL names another host: not managing Redis"; return 0; }
  redis_answers && return 0
  if ! command -v redis-server >/dev/null 2>&1; then
    if ! can_apt; then
      say "Redis is not installed. Install it (Debian/Ubuntu: sudo apt-get install redis-server), or set"
      say "REDIS_URL in .env to a Redis 6+ server."
      exit 1
    fi
    apt_install redis-server redis-tools
  fi
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis redis_answers
}

ensure_postgres
ensure_redis
