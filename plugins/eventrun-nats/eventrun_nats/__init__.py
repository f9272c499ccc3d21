"""eventrun's NATS JetStream plugin: the ``nats`` trigger (source) and the ``nats:`` sink.

Registered through entry points; nothing here is imported by eventrun's core.
"""

__all__: list[str] = []
