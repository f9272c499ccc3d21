"""Raises at import time (not an ImportError), like a module reading a missing setting."""

raise RuntimeError("SETTINGS_URL is not set")


def handler(event, context):
    return None
