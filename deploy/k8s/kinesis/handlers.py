"""The handler of eventrun.yaml next to this file (replace with the app's own)."""

from __future__ import annotations

import base64
import json
from typing import Any


def clicks(event: dict[str, Any], context: Any) -> None:
    for record in event["Records"]:
        print(json.loads(base64.b64decode(record["kinesis"]["data"])))
