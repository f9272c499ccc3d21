"""The HTTP API's $default route: answers every path not routed elsewhere."""


def handler(event, context):
    return {
        "statusCode": 200,
        "body": f"{event['requestContext']['http']['method']} {event['rawPath']}",
        "headers": {"content-type": "text/plain"},
    }
