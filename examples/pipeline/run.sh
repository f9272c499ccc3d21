#!/bin/sh
# Run the pipeline example with one command: ./run.sh  (or: sh examples/pipeline/run.sh)
# Uses $REDIS_URL when set; otherwise starts a private redis-server on a free port
# (nothing kept on disk) and stops it on exit. Extra arguments go to `eventrun run`.
set -eu
cd "$(dirname "$0")"
EVENTRUN="${EVENTRUN:-eventrun}"
command -v "$EVENTRUN" >/dev/null 2>&1 || EVENTRUN="../../.venv/bin/eventrun"
if [ -z "${REDIS_URL:-}" ]; then
    command -v redis-server >/dev/null 2>&1 || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        >"${TMPDIR:-/tmp}/eventrun-pipeline-redis.log" 2>&1 &
    REDIS_PID=$!
    trap 'kill "$REDIS_PID" 2>/dev/null || true' EXIT
    export REDIS_URL="redis://127.0.0.1:$PORT/0"
    i=0
    until redis-cli -p "$PORT" ping >/dev/null 2>&1; do
        i=$((i + 1)); [ "$i" -lt 100 ] || { echo "redis-server did not start (see ${TMPDIR:-/tmp}/eventrun-pipeline-redis.log)" >&2; exit 1; }
        sleep 0.05
    done
    echo "redis-server on $REDIS_URL (pid $REDIS_PID); in another shell: export REDIS_URL=$REDIS_URL"
fi
# In the background so a signal to this script (Ctrl-C, SIGTERM) becomes the daemon's
# graceful shutdown before the private redis-server is stopped.
"$EVENTRUN" run -c eventrun.yaml "$@" &
DAEMON_PID=$!
trap 'kill -TERM "$DAEMON_PID" 2>/dev/null || true' INT TERM
status=0
wait "$DAEMON_PID" || status=$?
while kill -0 "$DAEMON_PID" 2>/dev/null; do wait "$DAEMON_PID" || status=$?; done
exit "$status"
