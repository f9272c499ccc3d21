#!/usr/bin/python3
"""apache/kafka's kafka-topics.sh --create, on the Tansu broker (deploy/compose.yaml's kafka-init).

Waits up to 60 s for the broker (Compose may start this before the broker listens)."""

import argparse
import socket
import subprocess
import sys
import time

parser = argparse.ArgumentParser(prog="kafka-topics.sh")
parser.add_argument("--bootstrap-server", required=True)
parser.add_argument("--create", action="store_true", required=True)
parser.add_argument("--if-not-exists", action="store_true")
parser.add_argument("--topic", required=True)
parser.add_argument("--partitions", type=int, default=1)
parser.add_argument("--replication-factor", type=int, default=1)
args = parser.parse_args()
host, _, port = args.bootstrap_server.rpartition(":")
deadline = time.monotonic() + 60
while True:
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"kafka-topics.sh: no broker at {args.bootstrap_server} within 60 s")
        time.sleep(0.5)
cmd = ["/usr/local/bin/tansu", "topic", "create", args.topic,
       "--partitions", str(args.partitions), "--broker", f"tcp://{host}:{port}"]
done = subprocess.run(cmd, capture_output=True, text=True, check=False)
if done.returncode and not (args.if_not_exists and "already exists" in done.stdout + done.stderr):
    sys.exit(f"kafka-topics.sh: {done.stdout}{done.stderr}")
print(f"Created topic {args.topic}.")
