"""A function URL: GET/POST /hello. Returns an API Gateway v2-style response."""

import json
import os

WORKER_PID = os.getpid()  # init phase: runs once per worker (the cold start)


def handler(event, context):
    params = event.get("queryStringParameters") or {}
    name = params.get("name", "world")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "message": f"hello, {name}",
                "request_id": context.aws_request_id,
                "worker_pid": WORKER_PID,
            }
        ),
    }
