"""A CSV uploaded to the bucket: count its rows."""

import json
import os
from pathlib import Path


def handler(event, context):
    out = Path(os.environ["DATA_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = record["s3"]["object"]["key"]
        summary = {"bucket": bucket, "key": key, "expected_bucket": os.environ["BUCKET"]}
        (out / f"upload-{Path(key).stem}.json").write_text(json.dumps(summary))
