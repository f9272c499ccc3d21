"""Shared order rules, shipped as a Lambda layer (python/ is the layer's import root)."""


def is_valid(order: dict) -> bool:
    return order.get("quantity", 0) > 0
