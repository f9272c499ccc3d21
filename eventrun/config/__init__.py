"""``eventrun.yaml``: the validated configuration and how it is loaded.

What it does: reads the file, parses YAML, interpolates ``${VAR}``, validates everything
into frozen pydantic models (durations become seconds) and cross-checks references; any
problem is a :class:`~eventrun.exceptions.ConfigError` naming file, key path, value and
what is expected. Also the JSON Schema (``eventrun schema``) and the generated reference
(``python -m eventrun.config._docgen``).

May import: ``eventrun.exceptions`` and ``eventrun.common`` only; config is data and
imports nothing of the runtime.

Exports: the models (``Config``, ``FunctionConfig``, one ``*Trigger`` per kind, the
connection models), ``load_config``, ``parse_config``, ``parse_document``,
``validate_config``, ``config_json_schema``.
"""

from __future__ import annotations

from eventrun.config._connections import is_loopback
from eventrun.config._plugins import plugin_models
from eventrun.config._root import (
    DEFAULT_INHERIT_ENV,
    TRIGGER_KINDS,
    AuthConfig,
    BatchControls,
    Binding,
    Config,
    ConnectionModel,
    Connections,
    CorsConfig,
    CronTrigger,
    DestinationRef,
    DestinationsConfig,
    Duration,
    DynamoDBConnection,
    DynamoDBStreamsTrigger,
    FilewatchTrigger,
    FilterCriteria,
    FilterPattern,
    FunctionConfig,
    HttpTrigger,
    KafkaConnection,
    KafkaTrigger,
    KinesisConnection,
    KinesisTrigger,
    LoadedConfig,
    RedisConnection,
    RedisStreamsTrigger,
    RouteRule,
    ServerConfig,
    SqsConnection,
    SqsTrigger,
    StoreConfig,
    TriggerConfig,
    TriggerModel,
    TriggerSpec,
    config_json_schema,
    config_model,
    connection_section,
    hidden_env,
    load_config,
    parse_config,
    parse_destination,
    parse_document,
    validate_config,
)

__all__ = [
    "DEFAULT_INHERIT_ENV",
    "TRIGGER_KINDS",
    "AuthConfig",
    "BatchControls",
    "Binding",
    "Config",
    "ConnectionModel",
    "Connections",
    "CorsConfig",
    "CronTrigger",
    "DestinationRef",
    "DestinationsConfig",
    "Duration",
    "DynamoDBConnection",
    "DynamoDBStreamsTrigger",
    "FilewatchTrigger",
    "FilterCriteria",
    "FilterPattern",
    "FunctionConfig",
    "HttpTrigger",
    "KafkaConnection",
    "KafkaTrigger",
    "KinesisConnection",
    "KinesisTrigger",
    "LoadedConfig",
    "RedisConnection",
    "RedisStreamsTrigger",
    "RouteRule",
    "ServerConfig",
    "SqsConnection",
    "SqsTrigger",
    "StoreConfig",
    "TriggerConfig",
    "TriggerModel",
    "TriggerSpec",
    "config_json_schema",
    "config_model",
    "connection_section",
    "hidden_env",
    "is_loopback",
    "load_config",
    "parse_config",
    "parse_destination",
    "parse_document",
    "plugin_models",
    "validate_config",
]
