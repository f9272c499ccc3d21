"""A cron function: receives EventBridge's "Scheduled Event" once a minute."""


def handler(event, context):
    print(f"tick at {event['time']} ({event['detail-type']})")
    return {"scheduled_for": event["time"]}
