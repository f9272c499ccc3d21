"""Processes files dropped in ./inbox (S3-shaped events) and writes a summary to ./outbox.

A file whose first line is "FAIL" raises, so its event lands in the local:uploads-failed DLQ.
"""

import json
import os
from pathlib import Path
from urllib.parse import unquote_plus


def handler(event, context):
    outbox = Path(os.environ.get("OUTBOX", "outbox"))
    outbox.mkdir(exist_ok=True)
    results = []
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
        text = Path(bucket, key).read_text()
        if text.startswith("FAIL"):
            raise ValueError(f"cannot process {key}: it asks to fail")
        summary = {
            "key": key,
            "size": record["s3"]["object"]["size"],
            "lines": len(text.splitlines()),
            "words": len(text.split()),
        }
        (outbox / f"{Path(key).name}.json").write_text(json.dumps(summary))
        results.append(summary)
    return {"processed": results}
