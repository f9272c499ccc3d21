#!/usr/bin/env bash
# System packages the test suite talks to (Debian names): a real redis-server, Debian's
# Chromium + ChromeDriver for the status-page browser test, and systemd-analyze (in the
# `systemd` package) for the deploy test's `systemd-analyze verify` of the unit. Installs
# what is missing when run as root with apt-get; otherwise says exactly what to install
# and fails.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# `system-deps.sh bench`: the HTTP load generator for make bench
if [ "${1:-}" = bench ]; then command -v wrk >/dev/null 2>&1 || missing+=(wrk); fi
# kinesalite (npm), the second Kinesis implementation the stream tests run against,
# into .node/ of the repository (tests/fixtures/kinesalite.py looks there)
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/.node/node_modules/.bin/kinesalite" ]; then
  if command -v npm >/dev/null 2>&1; then
    npm install --silent --no-audit --no-fund --prefix "$root/.node" kinesalite@3.3.3 >/dev/null
  else
    missing+=(npm)
  fi
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "error: missing system packages: ${missing[*]}" >&2
  echo "       install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
