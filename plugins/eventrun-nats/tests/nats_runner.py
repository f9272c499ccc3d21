"""A stand-in daemon for the NATS chaos tests: the real poller and dispatcher in a process
of its own, a handler appending one JSON line per handled record to a ledger file.

    python nats_runner.py URL STREAM LEDGER [DELAY_S] [ACK_WAIT_S]

Prints ``ready`` once the consumer is bound; SIGTERM shuts down gracefully (2 s grace).
Used until the plugin config seam lets ``eventrun run`` load the ``nats`` trigger.
"""

from __future__ import annotations

import base64
import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import structlog

from eventrun._clock import SystemClock
from eventrun._dispatch import DispatchSettings, TriggerDispatcher
from eventrun.abc import SourceSpec
from eventrun_nats.config import NatsTrigger
from eventrun_nats.source import NatsPoller

GRACE_S = 2.0


class _Result:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.ok = True
        self.payload = b"{}"
        self.error_type = None


async def main(url: str, stream: str, ledger: Path, delay_s: float, ack_wait: float) -> None:
    cfg = NatsTrigger.model_validate(
        {"url": url, "stream": stream, "consumer": "fn", "ack_wait": ack_wait}
    )
    spec = SourceSpec(kind="nats", name="fn/nats[0]", function="fn", config=cfg)
    out = ledger.open("a", buffering=1)
    calls = 0

    async def invoke(payload: bytes, *, event: Any = None) -> _Result:
        nonlocal calls
        calls += 1
        doc = json.loads(payload)
        if delay_s:
            await anyio.sleep(delay_s)
        lines = []
        for record in doc["records"]:
            body = json.loads(base64.b64decode(record["data"]))
            body["delivered"] = record["deliveredCount"]
            lines.append(json.dumps(body) + "\n")
        out.write("".join(lines))
        out.flush()
        return _Result(f"req-{calls}")

    async with NatsPoller(spec) as poller:
        settings = DispatchSettings(function="fn", trigger=spec.name, batch_size=20)
        dispatcher = TriggerDispatcher(poller, settings, invoke, clock=SystemClock())
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)

            async def on_sigterm() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        await dispatcher.shutdown(GRACE_S)
                        return

            tg.start_soon(on_sigterm)
            print("ready", flush=True)
    out.close()


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    args = sys.argv[1:]
    anyio.run(
        main,
        args[0],
        args[1],
        Path(args[2]),
        float(args[3]) if len(args) > 3 else 0.0,
        float(args[4]) if len(args) > 4 else 2.0,
    )
