#!/bin/bash
# Installs what building and testing durable needs on Debian 12, as root:
# PostgreSQL 15 with its PGXS headers, a C compiler, and Perl's IPC::Run for
# the TAP tests.  Does nothing when all of it is already there.
set -euo pipefail
packages=(postgresql-15 postgresql-server-dev-15 libipc-run-perl make gcc)
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
