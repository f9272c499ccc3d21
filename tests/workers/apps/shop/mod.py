"""Reached as ``shop.mod:handler`` and as ``shop/mod.handler``."""

from __future__ import annotations


def handler(event, context):
    return {"module": __name__, "event": event}


class Api:
    @staticmethod
    def route(event, context):
        return "routed"
