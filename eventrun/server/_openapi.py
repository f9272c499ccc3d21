"""The OpenAPI 3.1 document of the daemon's HTTP API (``GET /openapi.json``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventrun.server._view import ServedRuntime

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "description": 'Lambda\'s error body: "Message" for the errors botocore reads that way '
    '(ResourceNotFoundException...), "message" for the others.',
    "properties": {
        "Type": {"type": "string"},
        "message": {"type": "string"},
        "Message": {"type": "string"},
    },
    "anyOf": [{"required": ["message"]}, {"required": ["Message"]}],
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(runtime: ServedRuntime) -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, Any] = {
        "/2015-03-31/functions/{name}/invocations": {
            "post": {
                "summary": "Invoke a function (the AWS Lambda Invoke API).",
                "operationId": "invoke",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "X-Amz-Invocation-Type",
                        "in": "header",
                        "schema": {"enum": ["RequestResponse", "Event", "DryRun"]},
                    },
                    {
                        "name": "X-Amz-Log-Type",
                        "in": "header",
                        "schema": {"enum": ["None", "Tail"]},
                    },
                    {"name": "X-Amz-Client-Context", "in": "header", "schema": {"type": "string"}},
                ],
                "requestBody": {"content": {"application/json": {"schema": {}}}},
                "responses": {
                    "200": _json({}, "The handler's return value, or its error JSON."),
                    "202": {"description": "Queued (Event)."},
                    "204": {"description": "Validated (DryRun)."},
                    "400": _json(error, "Invalid request."),
                    "401": _json(error, "Missing or invalid bearer token."),
                    "404": _json(error, "ResourceNotFoundException."),
                    "413": _json(error, "RequestTooLargeException."),
                    "429": _json(
                        error,
                        "TooManyRequestsException: every concurrency slot busy "
                        "(RequestResponse) or the async queue at a store cap (Event).",
                    ),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness.",
                "operationId": "healthz",
                "responses": {"200": _json({"type": "object"}, "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: every source started.",
                "operationId": "readyz",
                "responses": {
                    "200": _json({"type": "object"}, "Ready."),
                    "503": _json({"type": "object"}, "Not ready yet."),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics.",
                "operationId": "metrics",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {
                        "description": "Text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _json(error, "Missing or invalid bearer token."),
                },
            }
        },
        "/status": {
            "get": {
                "summary": "Functions, workers, sources and queues as JSON.",
                "operationId": "status",
                "security": [{"bearer": []}],
                "responses": {
                    "200": _json({"type": "object"}, "Status."),
                    "401": _json(error, "Missing or invalid bearer token."),
                },
            }
        },
        "/status/history": {
            "get": {
                "summary": "The last 15 minutes sampled every 5 s (the status page's charts).",
                "operationId": "statusHistory",
                "security": [{"bearer": []}],
                "responses": {
                    "200": _json({"type": "object"}, "Series by function, trigger, queue."),
                    "401": _json(error, "Missing or invalid bearer token."),
                },
            }
        },
    }
    for route in runtime.routes:
        methods = [m.lower() for m in route.methods if m != "*"] or [
            "get",
            "head",
            "post",
            "put",
            "patch",
            "delete",
            "options",
        ]
        paths.setdefault(route.path, {})
        for method in methods:
            paths[route.path][method] = {
                "summary": "Function URL (API Gateway payload format 2.0).",
                "responses": {"default": {"description": "The function's mapped response."}},
            }
    return {
        "openapi": "3.1.0",
        "info": {"title": "eventrun", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
