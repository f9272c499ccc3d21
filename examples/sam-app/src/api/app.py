"""GET /orders/{id} (a REST API route, payload format 1.0)."""

import json
import os
from pathlib import Path


def get_order(event, context):
    order_id = event["pathParameters"]["id"]
    path = Path(os.environ["DATA_DIR"]) / f"order-{order_id}.json"
    if not path.exists():
        return {"statusCode": 404, "body": json.dumps({"message": f"no order {order_id}"})}
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": path.read_text(),
    }
