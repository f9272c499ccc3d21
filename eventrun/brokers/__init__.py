"""Broker client set-up shared by sources and sinks: Kafka (aiokafka), Redis (redis-py)
and SQS (aiobotocore) connections built from the config's connection models.

What it does: turns a ``connections.KIND.NAME`` model into client keyword arguments and
opened clients (TLS, SASL, credentials, endpoints), and translates client exceptions.

May import: ``eventrun.exceptions`` and ``eventrun.common`` only.

Exports nothing here: import ``eventrun.brokers.kafka``, ``.redis`` or ``.sqs`` by name, so
a daemon that uses one broker never imports the others' clients (each module is one
kind's public API, like ``eventrun.sources.kafka``).
"""
