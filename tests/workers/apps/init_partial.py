"""Writes at import time without a final newline."""

import sys

sys.stdout.write("init without newline")


def handler(event, context):
    return 1
