"""eventrun.config: loading, interpolation, durations, defaults and exact error lines."""

from __future__ import annotations

import copy
import json
import ssl
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventrun.config import (
    DEFAULT_INHERIT_ENV,
    Config,
    CronTrigger,
    FilewatchTrigger,
    HttpTrigger,
    KafkaConnection,
    KafkaTrigger,
    RedisConnection,
    RedisStreamsTrigger,
    RouteRule,
    SqsConnection,
    SqsTrigger,
    StoreConfig,
    config_json_schema,
    hidden_env,
    load_config,
    parse_config,
    parse_destination,
)
from eventrun.config._docgen import EXAMPLE
from eventrun.config._duration import format_duration, parse_duration
from eventrun.config._plugins import plugin_models
from eventrun.config._types import Range, render_value
from eventrun.exceptions import ConfigError
from tests._hypothesis import examples

SPEC_EXAMPLE = """\
connections:                      # named broker connections, referenced by triggers/sinks
  kafka:  {main: {bootstrap_servers: "${KAFKA:-localhost:9092}"}}
  redis:  {main: {url: "redis://localhost:6379/0"}}
  sqs:    {main: {region: us-east-1, endpoint_url: "${SQS_ENDPOINT:-}"}}

server: {host: 127.0.0.1, port: 9000, auth: {tokens_env: EVENTRUN_TOKENS}}
store:  {url: "sqlite:///state.db"}   # embedded default

functions:
  orders:
    handler: app.orders:handler   # module:attr, or Lambda style "app/orders.handler"
    runtime: process
    timeout: 30s                  # 1s..15m, like Lambda
    memory_mb: 512
    concurrency: 8
    min_warm: 1
    max_requests: 0
    environment: {TABLE: orders}
    destinations: {on_success: null, on_failure: "local:orders-failed"}
    maximum_retry_attempts: 2
    maximum_event_age: 6h
    triggers:
      - kafka:
          connection: main
          topics: [orders]
          group_id: orders-fn
          starting_position: TRIM_HORIZON
          batch_size: 100
          maximum_batching_window: 500ms
          parallelization_factor: 1
          bisect_batch_on_function_error: true
          maximum_retry_attempts: 10
          maximum_record_age: 1h
          report_batch_item_failures: true
          filter_criteria: {filters: [{pattern: '{"value": {"kind": ["order"]}}'}]}
          on_failure: "kafka:main/orders-dlq"
"""


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(text, filename="eventrun.yaml", environ=environ or {})


def fn(body: str) -> str:
    """A config with one function ``f`` whose mapping is ``body`` (YAML flow)."""
    handler = "" if body.startswith("handler:") else "handler: 'app:h', "
    return f"functions:\n  f: {{{handler}{body}}}\n"


def trig(kind: str, body: str) -> str:
    """A config with connections ``main`` and one trigger of ``kind`` with ``body``."""
    return (
        "connections:\n"
        "  kafka: {main: {bootstrap_servers: 'localhost:9092'}}\n"
        "  redis: {main: {url: 'redis://localhost:6379/0'}}\n"
        "  sqs: {main: {region: eu-west-1}}\n"
        "functions:\n"
        "  f:\n"
        "    handler: app:h\n"
        "    triggers:\n"
        f"      - {kind}: {{{body}}}\n"
    )


E = "eventrun.yaml: "
# the built-in kinds, then those of installed plugins (`make setup` installs plugins/*)
KINDS = ", ".join(
    [
        "sqs",
        "kafka",
        "redis_streams",
        "kinesis",
        "dynamodb_streams",
        "http",
        "cron",
        "filewatch",
        *plugin_models().triggers,
    ]
)
KT = "functions.f.triggers[0].kafka."
BAD = [
    # unknown keys, at several depths
    ("shutdown_grase: 3\n", E + "shutdown_grase: unknown key (did you mean 'shutdown_grace'?)"),
    (
        "colour: 3\n",
        E + "colour: unknown key (expected one of: connections, server, store, functions, "
        "shutdown_grace, bindings)",
    ),
    (fn("tiemout: 3"), E + "functions.f.tiemout: unknown key (did you mean 'timeout'?)"),
    (
        trig("kafka", "connection: main, topics: [t], batchsize: 5"),
        E + KT + "batchsize: unknown key (did you mean 'batch_size'?)",
    ),
    ("server: {auth: {mod: none}}\n", E + "server.auth.mod: unknown key (did you mean 'mode'?)"),
    (
        trig("kafak", "x: 1"),
        E + "functions.f.triggers[0].kafak: unknown key (did you mean 'kafka'?)",
    ),
    # user text holding line separators is escaped: one problem, one line (issue 21;
    # the first row is the fuzzer's example: U+0085, which str.splitlines() breaks on)
    (
        '" \\x85": null\n',
        E + '[" \\u0085"]: unknown key (expected one of: connections, server, store, functions, '
        "shutdown_grace, bindings)",
    ),
    (
        '"bad\\Lkey": 1\n',
        E + '["bad\\u2028key"]: unknown key (expected one of: connections, server, store, '
        "functions, shutdown_grace, bindings)",
    ),
    (
        'functions: {"f\\rg": {handler: "app:h"}}\n',
        E + 'functions["f\\rg"]: function names must be 1-64 letters, digits, - and _',
    ),
    (
        fn('handler: "a\\Pb"'),
        E + 'functions.f.handler: must be "package.module:function" or Lambda style '
        "\"dir/file.function\", got 'a\\u2029b'",
    ),
    (
        fn('environment: {A: ["\\x1c\\x0b\\x0c\\x1e"]}'),
        E + 'functions.f.environment.A: must be a string, got ["\\u001c\\u000b\\f\\u001e"]',
    ),
    # wrong types
    (fn("concurrency: many"), E + "functions.f.concurrency: must be an integer, got 'many'"),
    (fn("concurrency: true"), E + "functions.f.concurrency: must be an integer, got true"),
    (fn("triggers: 5"), E + "functions.f.triggers: must be a list, got 5"),
    ("server: 5\n", E + "server: must be a mapping, got 5"),
    ("- a\n", E + 'must be a mapping, got ["a"]'),
    (
        fn("runtime: lambda"),
        E + "functions.f.runtime: must be one of 'process', 'inline', 'python3.9', "
        "'python3.10', 'python3.11', 'python3.12', 'python3.13', 'python3.14', 'nodejs18.x', "
        "'nodejs20.x', 'nodejs22.x', 'provided', 'provided.al2' or 'provided.al2023', "
        "got 'lambda'",
    ),
    (fn("environment: {A: [1]}"), E + "functions.f.environment.A: must be a string, got [1]"),
    (
        fn("inherit_env: [PATH, EVENTRUN_TOKENS]"),
        E + "functions.f.inherit_env: EVENTRUN_* variables hold the daemon's settings and "
        "secrets and are never passed to workers; set what the handler needs under "
        "environment, got 'EVENTRUN_TOKENS'",
    ),
    (
        fn("inherit_env: ['A=B']"),
        E + "functions.f.inherit_env: must be variable names or globs (fnmatch), without '=', "
        "got 'A=B'",
    ),
    ("functions:\n  f: {}\n", E + "functions.f.handler: is required"),
    # out of range, one per range family
    (
        trig("kafka", "connection: main, topics: [t], batch_size: 0"),
        E + KT + "batch_size: must be 1..10000, got 0",
    ),
    (fn("timeout: 20m"), E + "functions.f.timeout: must be 1s..15m, got '20m'"),
    (fn("memory_mb: 64"), E + "functions.f.memory_mb: must be 128..10240, got 64"),
    (
        fn("maximum_retry_attempts: 3"),
        E + "functions.f.maximum_retry_attempts: must be 0..2, got 3",
    ),
    (fn("maximum_event_age: 30s"), E + "functions.f.maximum_event_age: must be 1m..6h, got '30s'"),
    (
        fn("concurrency: 2, min_warm: 3"),
        E + "functions.f.min_warm: must be 0..concurrency (2), got 3",
    ),
    ("server: {port: 70000}\n", E + "server.port: must be 0..65535, got 70000"),
    (
        trig("kafka", "connection: main, topics: [t], maximum_record_age: 30s"),
        E + KT + "maximum_record_age: must be -1 (forever) or 1m..7d, got '30s'",
    ),
    (
        trig("kafka", "connection: main, topics: [t], parallelization_factor: 11"),
        E + KT + "parallelization_factor: must be 1..10, got 11",
    ),
    (
        trig("kafka", "connection: main, topics: [t], maximum_batching_window: 301"),
        E + KT + "maximum_batching_window: must be 0s..5m, got 301",
    ),
    (
        trig("sqs", "queue_name: q, maximum_concurrency: 1"),
        E + "functions.f.triggers[0].sqs.maximum_concurrency: must be 2..1000, got 1",
    ),
    (
        trig("cron", "schedule: '* * * * *', catch_up: 1001"),
        E + "functions.f.triggers[0].cron.catch_up: must be 0..1000, got 1001",
    ),
    (
        trig("filewatch", "path: in, settle: 2m"),
        E + "functions.f.triggers[0].filewatch.settle: must be 0s..1m, got '2m'",
    ),
    # bad durations
    (
        fn("timeout: 5 minutes"),
        E + "functions.f.timeout: must be a duration (seconds, or a string like 250ms, 30s, 5m, "
        "2h), got '5 minutes'",
    ),
    (
        "shutdown_grace: 10y\n",
        E + "shutdown_grace: must be a duration (seconds, or a string like 250ms, 30s, 5m, 2h), "
        "got '10y'",
    ),
    # environment variables
    (
        fn("handler: '${HANDLER}'"),
        E + "functions.f.handler: environment variable HANDLER is not set (set it, or write "
        "${HANDLER:-default}), got '${HANDLER}'",
    ),
    (
        fn("handler: 'a:${b'"),
        E + "functions.f.handler: has a malformed ${...}: use ${VAR}, ${VAR:-default}, or $$ for "
        "a $, got 'a:${b'",
    ),
    # handler strings
    (
        fn("handler: 'orders'"),
        E + 'functions.f.handler: must be "package.module:function" or Lambda style '
        "\"dir/file.function\", got 'orders'",
    ),
    (
        fn("handler: 'a:b:c'"),
        E + 'functions.f.handler: must be "package.module:function" or Lambda style '
        "\"dir/file.function\", got 'a:b:c'",
    ),
    # destinations
    (
        fn("destinations: {on_failure: orders-failed}"),
        E + "functions.f.destinations.on_failure: must be a destination (local:NAME, file:PATH, "
        "sqs:CONNECTION/QUEUE, kafka:CONNECTION/TOPIC, redis:CONNECTION/STREAM, "
        "kinesis:CONNECTION/STREAM, http(s)://URL, "
        "function:NAME, or PLUGIN:TARGET), got 'orders-failed'",
    ),
    (
        fn("destinations: {on_failure: 'kafka:dlq'}"),
        E + "functions.f.destinations.on_failure: must be kafka:CONNECTION/TOPIC, got 'kafka:dlq'",
    ),
    (
        fn("destinations: {on_failure: 'https://'}"),
        E
        + "functions.f.destinations.on_failure: must be an https:// URL with a host, got 'https://'",
    ),
    (
        trig("kafka", "connection: main, topics: [t], on_success: 5"),
        E + KT + "on_success: must be a destination, a list of destinations, or {route: {field: "
        "NAME, VALUE: DESTINATION}, default: DESTINATION}, got 5",
    ),
    (
        trig("kafka", "connection: main, topics: [t], on_success: {route: {x: 'local:a'}}"),
        E + KT + "on_success.route.field: required: the result field to route on, got null",
    ),
    # references
    (
        trig("kafka", "connection: other, topics: [t]"),
        E + KT + "connection: must name a connection in connections.kafka (main), got 'other'",
    ),
    (
        fn("destinations: {on_failure: 'sqs:nope/q'}"),
        E + "functions.f.destinations.on_failure: must name a connection in connections.sqs "
        "(none defined), got 'sqs:nope/q'",
    ),
    (
        trig("sqs", "queue_name: q, on_success: ['local:a', 'function:g']"),
        E + "functions.f.triggers[0].sqs.on_success[1]: must name a function in functions (f), "
        "got 'function:g'",
    ),
    (
        trig(
            "kafka",
            "connection: main, topics: [t], on_success: {route: {field: k, a: 'redis:x/s'}}",
        ),
        E + KT + "on_success.route.a: must name a connection in connections.redis (main), "
        "got 'redis:x/s'",
    ),
    # trigger kinds
    (
        "functions:\n  f:\n    handler: app:h\n    triggers:\n"
        "      - {cron: {schedule: x}, http: {path: /}}\n",
        E + f"functions.f.triggers[0]: must have exactly one trigger kind ({KINDS}), "
        "got cron and http",
    ),
    (
        "functions:\n  f:\n    handler: app:h\n    triggers: [{}]\n",
        E + f"functions.f.triggers[0]: must have one trigger kind ({KINDS}), got nothing",
    ),
    # per-kind rules
    (
        trig("sqs", "queue_name: jobs.fifo, batch_size: 11"),
        E + "functions.f.triggers[0].sqs.batch_size: must be 1..10 for a FIFO queue, got 11",
    ),
    (
        trig("sqs", "batch_size: 5"),
        E + "functions.f.triggers[0].sqs: must set exactly one of queue_url, queue_name, "
        "got neither",
    ),
    (
        trig("kafka", "connection: main, topics: [t], starting_position: AT_TIMESTAMP"),
        E + KT + "starting_position_timestamp: required when starting_position is AT_TIMESTAMP",
    ),
    (
        trig("kafka", "connection: main, topic_pattern: '['"),
        E + KT + "topic_pattern: must be a valid regular expression (unterminated character set "
        "at position 0), got '['",
    ),
    (
        trig("kafka", "connection: main, topics: []"),
        E + KT + "topics: must not be empty, got []",
    ),
    (
        trig(
            "kafka",
            "connection: main, topics: [t], filter_criteria: {filters: [{pattern: '{bad'}]}",
        ),
        E + KT + "filter_criteria.filters[0].pattern: must be a JSON object string (Expecting "
        "property name enclosed in double quotes at char 1), got '{bad'",
    ),
    (
        trig(
            "kafka", "connection: main, topics: [t], filter_criteria: {filters: [{pattern: '[1]'}]}"
        ),
        E + KT + "filter_criteria.filters[0].pattern: must be a JSON object string, not a JSON "
        "list, got '[1]'",
    ),
    (
        trig("redis_streams", "connection: main, streams: [s], starting_position: latest"),
        E + 'functions.f.triggers[0].redis_streams.starting_position: must be "$", "0" or an '
        "entry id like 1700000000000-0, got 'latest'",
    ),
    (
        trig("http", "path: orders"),
        E + "functions.f.triggers[0].http.path: must start with /, got 'orders'",
    ),
    (
        trig("http", "path: /o, methods: [get, FETCH]"),
        E + "functions.f.triggers[0].http.methods[1]: must be one of GET, POST, PUT, PATCH, "
        "DELETE, HEAD, OPTIONS, *, got 'FETCH'",
    ),
    (
        trig("http", "path: /o, methods: GET"),
        E + "functions.f.triggers[0].http.methods: must be a list, got 'GET'",
    ),
    (
        trig("cron", "schedule: '* * * * *', timezone: Mars/Olympus"),
        E + "functions.f.triggers[0].cron.timezone: must be an IANA time zone like UTC or "
        "Europe/Paris, got 'Mars/Olympus'",
    ),
    (
        "connections: {redis: {main: {url: 'http://user:hunter2@host'}}}\n",
        E + "connections.redis.main.url: must be a redis://, rediss:// or unix:// URL, "
        "got 'http://user:***@host'",
    ),
    (
        "store: {url: 'postgres://db'}\n",
        E + "store.url: must be sqlite:///relative.db, sqlite:////abs.db or redis://host:port/db, "
        "got 'postgres://db'",
    ),
    (
        "functions:\n"
        "  f: {handler: 'a:h', triggers: [{http: {path: /x, methods: [POST]}}]}\n"
        "  g: {handler: 'a:h', triggers: [{http: {path: /y}}, {http: {path: /x}}]}\n",
        E + "functions.g.triggers[1].http.path: must be unique among http triggers (same path "
        "and method as functions.f.triggers[0].http), got '/x'",
    ),
    # security
    (
        "server: {host: 0.0.0.0, auth: {mode: none}}\n",
        E + "server.auth.mode: must be token when server.host is not loopback (0.0.0.0); the "
        "Invoke API would be open to the network, got 'none'",
    ),
    # YAML syntax
    (
        "functions:\n  f:\n    handler: app:h\n   timeout: 3\n",
        E
        + "line 4 column 4: invalid YAML: expected <block end>, but found '<block mapping start>'",
    ),
    ("a: 1\na: 2\n", E + "line 2 column 1: invalid YAML: duplicate key 'a'"),
    # connections
    (
        "connections:\n  kafka: {main: {bootstrap_servers: 'a:1, '}}\n",
        E + 'connections.kafka.main.bootstrap_servers: must list brokers as "host:port", '
        "got 'a:1, '",
    ),
    (
        "connections:\n  kafka: {main: {bootstrap_servers: 'a:1', sasl_mechanism: PLAIN}}\n",
        E + "connections.kafka.main.sasl_mechanism: needs security_protocol SASL_PLAINTEXT or "
        "SASL_SSL, got 'PLAIN'",
    ),
    (
        "connections:\n  kafka: {main: {bootstrap_servers: 'a:1', security_protocol: SASL_SSL}}\n",
        E + "connections.kafka.main.sasl_plain_username: required with security_protocol SASL_SSL",
    ),
    (
        "connections:\n  sqs: {main: {endpoint_url: 'ftp://x'}}\n",
        E + "connections.sqs.main.endpoint_url: must be an http:// or https:// URL, or empty, "
        "got 'ftp://x'",
    ),
    (
        "connections:\n  redis: {'bad name': {url: 'redis://localhost'}}\n",
        E + "connections.redis[\"bad name\"]: connection names must be letters, digits, '.', '-' "
        "and '_', got 'bad name'",
    ),
    # on_success routing rules
    (
        trig("kafka", "connection: main, topics: [t], on_success: {route: {field: t}, colour: r}"),
        E + KT + "on_success.colour: unknown key (expected route, default), got 'colour'",
    ),
    (
        trig("kafka", "connection: main, topics: [t], on_success: {route: [1]}"),
        E + KT + "on_success.route: must be a mapping {field: NAME, VALUE: DESTINATION, ...}, "
        'got {"route": [1]}',
    ),
    (
        trig("kafka", "connection: main, topics: [t], on_success: {route: {field: t}}"),
        E + KT + "on_success.route: must map at least one VALUE to a destination, "
        'got {"field": "t"}',
    ),
    (
        trig("kafka", "connection: main, topics: [t], on_success: {route: {field: t, a: nowhere}}"),
        E + KT + "on_success.route.a: must be a destination (local:NAME, file:PATH, "
        "sqs:CONNECTION/QUEUE, kafka:CONNECTION/TOPIC, redis:CONNECTION/STREAM, "
        "kinesis:CONNECTION/STREAM, http(s)://URL, "
        "function:NAME, or PLUGIN:TARGET), got 'nowhere'",
    ),
    # AT_TIMESTAMP
    (
        trig(
            "kafka",
            "connection: main, topics: [t], starting_position: AT_TIMESTAMP, "
            "starting_position_timestamp: true",
        ),
        E + KT + "starting_position_timestamp: must be epoch seconds or an ISO 8601 time, got true",
    ),
    (
        trig(
            "kafka",
            "connection: main, topics: [t], starting_position: AT_TIMESTAMP, "
            "starting_position_timestamp: yesterday",
        ),
        E + KT + "starting_position_timestamp: must be epoch seconds or an ISO 8601 time, "
        "got 'yesterday'",
    ),
    (
        trig(
            "kafka",
            "connection: main, topics: [t], starting_position: LATEST, "
            "starting_position_timestamp: 1704164645",
        ),
        E + KT + "starting_position_timestamp: only allowed when starting_position is "
        "AT_TIMESTAMP, got 1704164645.0",
    ),
    (
        trig(
            "kafka",
            "connection: main, topics: [t], starting_position: AT_TIMESTAMP, "
            "starting_position_timestamp: 9999999999",
        ),
        E + KT + "starting_position_timestamp: must not be in the future, "
        "got '2286-11-20T17:46:39+00:00'",
    ),
    # cron
    (
        trig("cron", "schedule: '  '"),
        E + "functions.f.triggers[0].cron.schedule: must be a non-empty schedule expression, "
        "got '  '",
    ),
    (
        trig("cron", "schedule: 'rate(5 minutes)', input: {a: {1: x}}"),
        E + "functions.f.triggers[0].cron.input.a: JSON object keys must be strings, got 1",
    ),
    (
        trig("cron", "schedule: 'rate(5 minutes)', input: {a: [1, !!binary aGk=]}"),
        E + "functions.f.triggers[0].cron.input.a[1]: must be JSON (null, boolean, number, "
        "string, list, mapping), got \"b'hi'\"",
    ),
    (
        "connections:\n  kafka: {main: {bootstrap_servers: 'a:1'}}\n"
        "functions:\n  f:\n    handler: app:h\n    triggers:\n      - kafka:\n",
        E + "functions.f.triggers[0].kafka: must be a mapping of kafka settings, got null",
    ),
    (
        trig("kafka", "connection: main, topics: [t], on_success: 'function:nope'"),
        E + KT + "on_success: must name a function in functions (f), got 'function:nope'",
    ),
    (
        "functions:\n  f: {handler: 'app:h', environment: {null: x}}\n",
        E + "functions.f.environment: keys must be strings, got null",
    ),
    # nesting past the loader's depth limit
    (
        "a: " + "[" * 300 + "]" * 300 + "\n",
        E + "a" + "[0]" * 64 + ": is nested too deeply",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[len(E) :][:60] for _, m in BAD])
def test_bad_config_message(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == message
    assert info.value.problems[0] == message
    assert all(len(p.splitlines()) == 1 for p in info.value.problems)


def test_every_problem_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse(fn("timeout: 0, memory_mb: 1, colour: red") + "server: {port: -1}\n")
    assert info.value.problems == [
        E + "server.port: must be 0..65535, got -1",
        E + "functions.f.timeout: must be 1s..15m, got 0",
        E + "functions.f.memory_mb: must be 128..10240, got 1",
        E + "functions.f.colour: unknown key (expected one of: handler, runtime, code, command, "
        "timeout, memory_mb, concurrency, min_warm, max_requests, environment, inherit_env, "
        "destinations, maximum_retry_attempts, maximum_event_age, retry_delay, triggers)",
    ]
    assert str(info.value) == info.value.problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "eventrun.yaml")
    assert str(info.value) == f"eventrun.yaml: file not found ({tmp_path / 'eventrun.yaml'})"
    assert info.value.exit_code == 2


def test_yaml_error_names_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "prod.yaml"
    path.write_text("functions: [\n")
    with pytest.raises(ConfigError, match=r"^prod\.yaml: line 2 column 1: invalid YAML: "):
        load_config(path)


def test_secret_values_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse("connections: {redis: {main: {url: 'ftp://:s3cret@h'}}}\n")
    assert "s3cret" not in str(info.value)


# -- good configs ------------------------------------------------------------------------


def test_spec_example_loads_with_defaults_from_environment() -> None:
    config = parse(SPEC_EXAMPLE)
    orders = config.functions["orders"]
    assert orders.timeout == 30.0
    assert orders.maximum_event_age == 6 * 3600
    assert orders.destinations.on_failure == "local:orders-failed"
    trigger = orders.triggers[0]
    assert trigger.kind == "kafka"
    kafka = trigger.spec
    assert isinstance(kafka, KafkaTrigger)
    assert kafka.maximum_batching_window == 0.5
    assert kafka.maximum_record_age == 3600.0
    assert kafka.filter_criteria is not None
    assert kafka.filter_criteria.patterns == [{"value": {"kind": ["order"]}}]
    assert config.connections.kafka["main"].bootstrap_servers == "localhost:9092"
    assert config.connections.sqs["main"].endpoint_url is None
    assert config.connections.sqs["main"].client_kwargs() == {"region_name": "us-east-1"}


def test_interpolation() -> None:
    env = {"KAFKA": "k1:9092,k2:9092", "EMPTY": "", "PW": "p$w"}
    text = """\
connections:
  kafka:
    main:
      bootstrap_servers: ${KAFKA}
      client_id: ${CLIENT:-svc}-$$-${EMPTY:-dflt}
      security_protocol: SASL_PLAINTEXT
      sasl_plain_username: u
      sasl_plain_password: ${PW}
  redis: {r: {url: "redis://:${PW}@h:6379/0"}}
functions:
  f:
    handler: app:h
    concurrency: ${CONC:-7}
    triggers:
      - redis_streams: {connection: r, streams: [s], starting_position: $}
"""
    config = parse(text, env)
    kafka = config.connections.kafka["main"]
    assert kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert kafka.client_id == "svc-$-dflt"
    assert kafka.sasl_plain_password is not None
    assert kafka.sasl_plain_password.get_secret_value() == "p$w"  # values are not re-interpolated
    assert config.functions["f"].concurrency == 7
    spec = config.functions["f"].triggers[0].spec
    assert isinstance(spec, RedisStreamsTrigger)
    assert spec.starting_position == "$"
    assert config.connections.redis["r"].redacted_url() == "redis://:***@h:6379/0"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (0.5, 0.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1m30s", 90.0),
        (" 45 ", 45.0),
        ("-1", -1.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 m", "5y", "m", "1.s", True, None, [], "nan", float("inf")])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.5, "500ms"), (90, "90s"), (900, "15m"), (21600, "6h")]
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_defaults_are_lambdas() -> None:
    config = parse(
        trig("sqs", "queue_url: 'https://sqs.eu-west-1.amazonaws.com/1/q'").replace(
            "      - sqs:", "      - kafka: {connection: main, topics: [t]}\n      - sqs:"
        )
        + "    \n"
    )
    assert config.shutdown_grace == 25.0
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 9000
    assert config.server.auth.tokens_env == "EVENTRUN_TOKENS"
    assert config.store.url == "sqlite:///.eventrun/state.db"
    f = config.functions["f"]
    assert (f.runtime, f.timeout, f.memory_mb, f.concurrency) == ("process", 3.0, 128, 4)
    assert (f.min_warm, f.max_requests, f.maximum_retry_attempts) == (0, 0, 2)
    assert f.maximum_event_age == 21600.0
    kafka, sqs = (t.spec for t in f.triggers)
    assert isinstance(kafka, KafkaTrigger)
    assert isinstance(sqs, SqsTrigger)
    assert (kafka.batch_size, kafka.maximum_batching_window, kafka.parallelization_factor) == (
        100,
        0.5,
        1,
    )
    assert (kafka.maximum_retry_attempts, kafka.maximum_record_age) == (-1, -1.0)
    assert kafka.starting_position == "TRIM_HORIZON"
    assert kafka.group_id is None
    assert kafka.bisect_batch_on_function_error is False
    assert (sqs.batch_size, sqs.maximum_batching_window, sqs.connection) == (10, 0.0, None)
    assert not sqs.is_fifo


def test_push_trigger_defaults() -> None:
    assert HttpTrigger(path="/x").methods == ["GET", "POST"]
    assert HttpTrigger(path="/x").auth == "token"
    cron = CronTrigger(schedule="rate(5 minutes)")
    assert (cron.timezone, cron.input, cron.catch_up, cron.overlap) == ("UTC", None, 1, "allow")
    fw = FilewatchTrigger(path="in")
    assert (fw.patterns, fw.ignore, fw.recursive, fw.events) == (["*"], [], True, ["created"])
    assert (fw.settle, fw.batch_size, fw.on_startup) == (0.5, 1, "none")
    assert fw.resolved_path(Path("/srv")) == Path("/srv/in")
    redis = RedisStreamsTrigger(connection="r", streams=["s"])
    assert (redis.starting_position, redis.claim_idle, redis.maximum_batching_window) == (
        "0",
        60.0,
        0.0,
    )


def test_load_config_paths_and_store(tmp_path: Path) -> None:
    (tmp_path / "eventrun.yaml").write_text(fn("timeout: 2s") + "store: {url: 'sqlite:///s.db'}\n")
    loaded = load_config(tmp_path / "eventrun.yaml")
    assert loaded.path == tmp_path / "eventrun.yaml"
    assert loaded.dir == tmp_path
    assert loaded.config.store.sqlite_path(loaded.dir) == tmp_path / "s.db"
    assert loaded.resolve("inbox") == tmp_path / "inbox"
    absolute = StoreConfig(url="sqlite:////var/lib/er.db")
    assert absolute.sqlite_path(tmp_path) == Path("/var/lib/er.db")
    redis_store = StoreConfig(url="redis://:pw@h:6379/0")
    assert redis_store.kind == "redis"
    assert redis_store.redacted_url() == "redis://:***@h:6379/0"
    with pytest.raises(ValueError, match="not a sqlite store"):
        redis_store.sqlite_path(tmp_path)


def test_lambda_style_handlers_and_yaml_timestamps() -> None:
    text = trig(
        "kafka",
        "connection: main, topics: [t], starting_position: AT_TIMESTAMP, "
        "starting_position_timestamp: 2024-01-02T03:04:05Z",
    ).replace("handler: app:h", "handler: src/app/orders.handler")
    spec = parse(text).functions["f"].triggers[0].spec
    assert isinstance(spec, KafkaTrigger)
    assert spec.starting_position_timestamp == 1704164645.0


def test_on_success_forms() -> None:
    rule = (
        "connection: main, topics: [t], on_success: {route: {field: type, a: 'local:a', "
        "b: 'kafka:main/b'}, default: 'function:f'}"
    )
    spec = parse(trig("kafka", rule)).functions["f"].triggers[0].spec
    assert isinstance(spec, KafkaTrigger)
    assert spec.on_success == RouteRule(
        field="type", routes={"a": "local:a", "b": "kafka:main/b"}, default="function:f"
    )
    assert spec.on_success.destinations() == ["local:a", "kafka:main/b", "function:f"]
    many = parse(trig("kafka", "connection: main, topics: [t], on_success: [local:a, 'x:y']"))
    assert many.functions["f"].triggers[0].spec.on_success == ["local:a", "x:y"]  # type: ignore[union-attr]


def test_connection_helpers(tmp_path: Path) -> None:
    plain = KafkaConnection(bootstrap_servers=["a:1", "b:2"])
    assert plain.aiokafka_kwargs() == {
        "bootstrap_servers": ["a:1", "b:2"],
        "client_id": "eventrun",
        "security_protocol": "PLAINTEXT",
    }
    sasl = KafkaConnection.model_validate(
        {
            "bootstrap_servers": "a:1",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "u",
            "sasl_plain_password": "hunter2",
        }
    )
    kw = sasl.aiokafka_kwargs(tmp_path)
    assert kw["sasl_plain_password"] == "hunter2"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    assert "hunter2" not in repr(sasl)
    sqs = SqsConnection.model_validate(
        {"endpoint_url": "http://127.0.0.1:5000", "aws_secret_access_key": "k"},
        context={"environ": {"AWS_DEFAULT_REGION": "ap-south-1"}},
    )
    assert sqs.client_kwargs() == {
        "region_name": "ap-south-1",
        "endpoint_url": "http://127.0.0.1:5000",
        "aws_secret_access_key": "k",
    }
    redis = RedisConnection.model_validate({"url": "rediss://user:pw@h:6380/1"})
    assert redis.redacted_url() == "rediss://user:***@h:6380/1"
    assert "pw" not in repr(redis)


def test_parse_destination() -> None:
    ref = parse_destination("kafka:main/orders-dlq")
    assert (ref.kind, ref.target, ref.connection, ref.name) == (
        "kafka",
        "main/orders-dlq",
        "main",
        "orders-dlq",
    )
    assert parse_destination("local:failed").name == "failed"
    assert parse_destination("https://hooks.example/x").target == "https://hooks.example/x"
    assert parse_destination("s3:bucket/prefix").kind == "s3"
    with pytest.raises(ValueError, match="must be a destination"):
        parse_destination("nowhere")
    with pytest.raises(ValueError, match=r"^must be local:NAME$"):
        parse_destination("local:")


def test_inherit_env_and_hidden_env() -> None:
    default = parse(fn("handler: 'app:h'"))
    assert default.functions["f"].inherit_env == list(DEFAULT_INHERIT_ENV)
    assert "AWS_*" in DEFAULT_INHERIT_ENV
    assert not [n for n in DEFAULT_INHERIT_ENV if n.startswith("EVENTRUN")]
    assert parse(fn("inherit_env: []")).functions["f"].inherit_env == []
    assert hidden_env(default) == {"EVENTRUN_TOKENS"}
    named = parse("server: {auth: {tokens_env: MY_TOKENS}}\n" + fn("handler: 'app:h'"))
    assert hidden_env(named) == {"MY_TOKENS"}
    open_ = parse("server: {auth: {mode: none, tokens_env: null}}\n" + fn("handler: 'app:h'"))
    assert hidden_env(open_) == frozenset()


def test_loopback_without_auth_is_allowed() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.8.0.1"):
        assert (
            parse(f"server: {{host: '{host}', auth: {{mode: none}}}}\n").server.auth.mode == "none"
        )


def test_models_are_frozen() -> None:
    config = parse(SPEC_EXAMPLE)
    with pytest.raises(ValueError, match="frozen"):
        config.functions["orders"].timeout = 1  # type: ignore[misc]


def test_json_schema_accepts_the_spec_example_and_rejects_unknown_keys() -> None:
    schema = config_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator = jsonschema.Draft202012Validator(schema)
    document = yaml.safe_load(SPEC_EXAMPLE)
    validator.validate(document)
    timeout = schema["$defs"]["FunctionConfig"]["properties"]["timeout"]  # type: ignore[index]
    assert {b["type"] for b in timeout["anyOf"]} == {"number", "string"}
    document["functions"]["orders"]["tiemout"] = 3
    assert not validator.is_valid(document)
    json.dumps(schema)


# -- robustness --------------------------------------------------------------------------

_BASES = [yaml.safe_load(SPEC_EXAMPLE), yaml.safe_load(EXAMPLE)]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            *("30s", "5m", "-1", "0", "1e9", "x:y", "local:a", "function:nightly", "${NOPE}"),
            *("$$", "AT_TIMESTAMP", "*", "q.fifo", "2024-01-01", "kafka:main/t", "/p", "UTC"),
        ]
    ),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_mutations_load_or_raise_config_error(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(_BASES)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        value = data.draw(_VALUES)
        action = data.draw(st.sampled_from(["replace", "add", "delete"]))
        parent: object = doc
        for part in path[:-1]:
            parent = parent[part]  # type: ignore[index]
        if not path:
            doc = value if action == "replace" else doc
            continue
        key = path[-1]
        if action == "replace":
            parent[key] = value  # type: ignore[index]
        elif action == "delete":
            del parent[key]  # type: ignore[attr-defined]
        elif isinstance(parent[key], dict):  # type: ignore[index]
            parent[key][data.draw(st.text(max_size=10))] = value  # type: ignore[index]
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        return
    problems = ["eventrun.yaml: (loaded)"]
    try:
        parse(text)
    except ConfigError as exc:  # the only exception allowed
        problems = exc.problems
    assert problems
    assert all(p.startswith("eventrun.yaml: ") and "\n" not in p for p in problems)


def test_config_errors_never_print_a_url_password(tmp_path: Path) -> None:
    """A password holding '/' or '@' defeated the old pattern (security issue #31)."""
    path = tmp_path / "eventrun.yaml"
    path.write_text('store: {url: "rediz://user:pa/ss@w0rd@localhost:1/0?x=1"}\nfunctions: {}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "store.url" in message
    assert "pa/ss" not in message
    assert "w0rd" not in message


def test_at_timestamp_forms() -> None:
    """A YAML date, epoch seconds as a string and an ISO string with offset all load."""

    def ts(value: str) -> float | None:
        body = "connection: main, topics: [t], starting_position: AT_TIMESTAMP, "
        spec = parse(trig("kafka", body + f"starting_position_timestamp: {value}"))
        kafka = spec.functions["f"].triggers[0].spec
        assert isinstance(kafka, KafkaTrigger)
        return kafka.starting_position_timestamp

    assert ts("2024-01-02") == 1704153600.0  # a date is midnight UTC
    assert ts("'1704164645.5'") == 1704164645.5
    assert ts("'2024-01-02T04:04:05+01:00'") == 1704164645.0
    assert ts("'2024-01-02T03:04:05'") == 1704164645.0  # no offset: UTC


def test_cron_input_becomes_json() -> None:
    text = trig(
        "cron",
        "schedule: 'rate(5 minutes)', input: {day: 2024-01-02, at: 2024-01-02T03:04:05Z, "
        "list: [1, 2.5, null, x, true], n: {m: [2024-01-03]}}",
    )
    spec = parse(text).functions["f"].triggers[0].spec
    assert isinstance(spec, CronTrigger)
    assert spec.input == {
        "day": "2024-01-02",
        "at": "2024-01-02T03:04:05+00:00",
        "list": [1, 2.5, None, "x", True],
        "n": {"m": ["2024-01-03"]},
    }
    json.dumps(spec.input)  # what the handler receives is JSON


def test_unreadable_config_files(tmp_path: Path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"functions: {}\n# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(latin)
    assert str(info.value) == "latin.yaml: not UTF-8 text (byte 19)"
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(folder)
    assert str(info.value) == "dir.yaml: cannot read (Is a directory)"


def test_kafka_client_certificate_is_loaded(tmp_path: Path) -> None:
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=eventrun-client", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    conn = KafkaConnection.model_validate(
        {
            "bootstrap_servers": "a:1",
            "security_protocol": "SSL",
            "ssl_certfile": "client.pem",
            "ssl_keyfile": "client.key",
        }
    )
    ctx = conn.aiokafka_kwargs(tmp_path)["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    wrong = KafkaConnection.model_validate(  # the key does not match: the chain was really read
        {"bootstrap_servers": "a:1", "security_protocol": "SSL", "ssl_certfile": "client.pem"}
    )
    with pytest.raises(ssl.SSLError):
        wrong.aiokafka_kwargs(tmp_path)


def test_sqs_session_token_and_auth_tokens() -> None:
    sqs = SqsConnection.model_validate(
        {"region": "eu-west-1", "aws_access_key_id": "AKIA", "aws_secret_access_key": "s",
         "aws_session_token": "s3ss10n"}
    )  # fmt: skip
    assert sqs.client_kwargs()["aws_session_token"] == "s3ss10n"
    assert "s3ss10n" not in repr(sqs)
    config = parse("server: {auth: {tokens_env: MY_TOKENS}}\n")
    auth = config.server.auth
    assert auth.tokens({"MY_TOKENS": " a, ,b ,"}) == frozenset({"a", "b"})
    assert auth.tokens({}) == frozenset()


def test_non_loopback_names_need_auth() -> None:
    """A host name other than localhost is not loopback: auth none is refused."""
    with pytest.raises(ConfigError, match=r"server\.auth\.mode: must be token when server\.host"):
        parse("server: {host: api.example, auth: {mode: none}}\n")


def test_format_duration_other_values() -> None:
    assert format_duration(-90) == "-90s"
    assert format_duration(1.25) == "1.25s"  # no unit divides it: seconds, as few digits as needed
    assert parse_duration(format_duration(1.25)) == 1.25


def test_range_bounds() -> None:
    """A bound with only a maximum, and an absent optional value, as the docs show them."""
    assert Range(hi=5).describe() == "<= 5"
    assert Range(hi=90, duration=True, forever=True).describe() == "-1 (forever) or <= 90s"
    assert Range(1).check(None) is None
    assert Range(60, forever=True).check(-1) == -1
    with pytest.raises(ValueError, match=r"must be <= 5"):
        Range(hi=5).check(6)


def test_render_value_of_keys_json_cannot_hold() -> None:
    """A mapping with a key JSON refuses (a tuple, from a YAML complex key) is still shown."""
    assert render_value({(1, 2): "x"}) == "{(1, 2): 'x'}"
    assert render_value({"url": "redis://u:pw@h", (1,): 1}) == "{'url': 'redis://u:***@h', (1,): 1}"
