#!/usr/bin/python3
"""apache/kafka's kafka-broker-api-versions.sh as a healthcheck: exit 0 when the broker listens."""

import socket
import sys

server = sys.argv[sys.argv.index("--bootstrap-server") + 1]
host, _, port = server.rpartition(":")
try:
    socket.create_connection((host, int(port)), timeout=2).close()
except OSError as exc:
    sys.exit(f"no broker at {server}: {exc}")
