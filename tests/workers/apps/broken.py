"""Fails at import time, like a handler with a missing dependency."""

import module_that_does_not_exist  # noqa: F401


def handler(event, context):
    return None
