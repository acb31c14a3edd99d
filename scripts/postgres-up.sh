#!/usr/bin/env bash
# Make the test PostgreSQL reachable: start the machine's cluster if it is down and create the
# `hookline` role and database the tests use. Needs root (or the postgres user) to start a
# cluster; otherwise it only reports. Exit 0 when PostgreSQL answers, 1 when it does not.
set -uo pipefail

host=127.0.0.1
port=5432

ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "postgres-up: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 1
fi

if ! ready && [ "$(id -u)" = 0 ] && command -v pg_lsclusters >/dev/null 2>&1; then
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_createcluster "$version" main >/dev/null
  fi
  pg_lsclusters -h | while read -r version cluster _; do
    pg_ctlcluster "$version" "$cluster" start 2>/dev/null || true
  done
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi

if ! ready; then
  echo "postgres-up: no PostgreSQL answering on $host:$port" >&2
  exit 1
fi

if [ "$(id -u)" = 0 ]; then
  as_postgres() { su postgres -c "$1"; }
  if [ "$(as_postgres "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='hookline'\"")" != 1 ]; then
    as_postgres "psql -qc \"CREATE ROLE hookline LOGIN CREATEDB PASSWORD 'hookline'\""
  fi
  if [ "$(as_postgres "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='hookline'\"")" != 1 ]; then
    as_postgres "createdb -O hookline hookline"
  fi
fi
echo "postgres-up: PostgreSQL ready on $host:$port"
