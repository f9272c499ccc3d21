"""Process orders from SQS with partial batch responses: a bad order (orderlib, a layer)
fails alone; a rush order is forwarded to the priority queue whose URL the template gives
(!Ref)."""

import json
import os
from pathlib import Path

import boto3
import orderlib  # from the OrderLibLayer layer

sqs = boto3.client("sqs")


def handler(event, context):
    out = Path(os.environ["DATA_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    for record in event["Records"]:
        order = json.loads(record["body"])
        if not orderlib.is_valid(order):
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        if order.pop("rush", False):
            order["priority"] = "high"
            sqs.send_message(
                QueueUrl=os.environ["PRIORITY_QUEUE_URL"], MessageBody=json.dumps(order)
            )
            continue
        order["source"] = record["eventSourceARN"].rsplit(":", 1)[-1]
        order["stage"] = os.environ["STAGE"]
        (out / f"order-{order['id']}.json").write_text(json.dumps(order))
    return {"batchItemFailures": failures}
