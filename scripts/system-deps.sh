#!/usr/bin/env bash
# System packages the test suite talks to (Debian names): a real redis-server,
# rabbitmq-server (the RabbitMQ plugin) and nats-server (the NATS plugin), Debian's
# Chromium + ChromeDriver for the status-page browser test, systemd-analyze (in the
# `systemd` package) for the deploy test's `systemd-analyze verify` of the unit, and
# Prometheus, which the KEDA test runs on a free port to evaluate the ScaledObject's query
# and the tests of deploy/prometheus and /metrics (Debian enables its own service on
# 9090 when installed: that one is disabled). Installs
# what is missing when run as root with apt-get; otherwise says exactly what to install
# and fails.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# The Runtime API tests (docs/runtimes.md): curl for the shell `bootstrap`, Node.js and npm
# for aws-lambda-ric, whose native addon builds with cmake, g++, make and autotools.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v autoreconf >/dev/null 2>&1 || missing+=(autoconf)
command -v automake >/dev/null 2>&1 || missing+=(automake)
command -v libtoolize >/dev/null 2>&1 || missing+=(libtool)
# the plugins' brokers (plugins/*/tests start their own, on free ports)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 \
  || missing+=(rabbitmq-server)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
# the MQTT plugin's tests start their own Mosquitto (/usr/sbin: not on a user's PATH)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
# libfaketime: the clock-jump test shifts a real daemon's wall clock (tests/chaos/test_clock.py)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || ls /usr/lib/*/faketime/libfaketime.so.1 \
  >/dev/null 2>&1 || missing+=(libfaketime)
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
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
else
  echo "error: missing system packages: ${missing[*]}" >&2
  echo "       install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
