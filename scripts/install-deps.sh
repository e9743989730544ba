#!/bin/bash
# Installs what building and testing durable needs on Debian 12, as root:
# PostgreSQL 15 with its PGXS headers, a C compiler, OpenSSL's headers (task
# tokens are signed with its SHA-256), Perl's IPC::Run for the
# TAP tests, and what the example workers use (psycopg2 for Python; Node.js,
# if the machine has none, and the npm package pg).  Does nothing when all of
# it is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
packages=(postgresql-15 postgresql-server-dev-15 libssl-dev libipc-run-perl make gcc python3-psycopg2)
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -d "$ROOT/examples/node/node_modules/pg" ]; then
    (cd "$ROOT/examples/node" && npm install --no-audit --no-fund --silent)
fi
