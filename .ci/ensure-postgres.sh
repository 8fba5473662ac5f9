#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries the coordinator tests start a throw-away
# cluster with (initdb, pg_ctl, postgres) are installed; install them when missing.
# Idempotent: does nothing when they are there. Debian/Ubuntu (apt-get).
set -euo pipefail

have_postgres() {
    for dir in ${EDGEREC_PG_BIN:-} /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ] && return 0
    done
    command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1
}

if have_postgres; then
    exit 0
fi
echo "PostgreSQL server binaries missing: installing them (apt-get install -y postgresql)" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "not root and no sudo: run 'apt-get install -y postgresql' as root" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get: install the PostgreSQL server (initdb, pg_ctl) with your package manager" >&2
    exit 1
fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q postgresql
have_postgres
