"""``eventrun.yaml``: the validated configuration and how it is loaded.

:func:`load_config` reads the file, parses YAML, interpolates ``${VAR}`` references
and validates everything into frozen pydantic models; any problem is a
:class:`~eventrun.exceptions.ConfigError` whose lines read
``FILE: key.path: what is expected, got VALUE``. Durations are seconds (``float``)
once loaded. After the models validate, :class:`Config` cross-checks references:
trigger and destination connections exist, ``function:NAME`` names a function.

The models live in ``_config_connections`` (connections, server, store),
``_config_triggers`` (one model per trigger kind) and ``_config_routing``
(filters, on_success routes); they are all re-exported here, the public place.
This module imports nothing of the runtime.

Why this module is over 400 lines: the root models, loading and the plugin-extended model
belong together; reference checks are in ``_references``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from eventrun.exceptions import ConfigError

from ._bindings import Binding
from ._connections import (
    AuthConfig,
    ConnectionModel,
    Connections,
    DynamoDBConnection,
    KafkaConnection,
    KinesisConnection,
    RedisConnection,
    ServerConfig,
    SqsConnection,
    StoreConfig,
)
from ._errors import translate_errors
from ._load import interpolate, parse_yaml, read_text
from ._plugins import plugin_models
from ._references import connection_section, cross_check
from ._routing import FilterCriteria, FilterPattern, RouteRule
from ._triggers import (
    TRIGGER_KINDS,
    BatchControls,
    CorsConfig,
    CronTrigger,
    DynamoDBStreamsTrigger,
    FilewatchTrigger,
    HttpTrigger,
    KafkaTrigger,
    KinesisTrigger,
    RedisStreamsTrigger,
    SqsTrigger,
    TriggerConfig,
    TriggerModel,
    TriggerSpec,
)
from ._types import (
    NO_VALUE,
    ConfigModel,
    Destination,
    DestinationRef,
    Duration,
    Int,
    Range,
    parse_destination,
    problem,
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
    "load_config",
    "parse_config",
    "parse_destination",
    "parse_document",
    "validate_config",
]

Runtime = Literal[
    "process",
    "inline",
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "provided",
    "provided.al2",
    "provided.al2023",
]
"""Lambda's runtime identifiers eventrun runs; ``python3.X`` is ``process``."""
_PROVIDED = ("provided", "provided.al2", "provided.al2023")
_MODULE_HANDLER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_LAMBDA_HANDLER = re.compile(r"([\w.-]+/)*[A-Za-z_][\w-]*(\.[A-Za-z_]\w*)+")


class DestinationsConfig(ConfigModel):
    """Destinations of asynchronous invocations (Lambda's ``DestinationConfig``)."""

    on_success: Destination | None = Field(None, description="Where successful results go.")
    on_failure: Destination | None = Field(
        None, description="Where events go after retries or maximum_event_age run out."
    )


DEFAULT_INHERIT_ENV: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_*",
)
"""The daemon's variables a worker inherits unless its function says otherwise: locale,
paths, proxies, CA bundles, and ``AWS_*`` (credentials, region, endpoints, as a Lambda
execution role provides them to a handler)."""


def hidden_env(config: Config) -> frozenset[str]:
    """Variables no worker inherits whatever ``inherit_env`` says: the bearer-token
    variable (``server.auth.tokens_env``); ``EVENTRUN_*`` is never inherited either."""
    name = config.server.auth.tokens_env
    return frozenset({name} if name else ())


def _inherit_names(value: list[str]) -> list[str]:
    for name in value:
        if not name or "=" in name:
            raise problem("must be variable names or globs (fnmatch), without '='", got=name)
        if name.startswith("EVENTRUN_"):
            raise problem(
                "EVENTRUN_* variables hold the daemon's settings and secrets and are never "
                "passed to workers; set what the handler needs under environment",
                got=name,
            )
    return value


def _environment_values(value: object) -> object:
    if isinstance(value, dict):
        return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in value.items()}
    return value


class FunctionConfig(ConfigModel):
    """One function: its handler, limits, async-invocation behaviour and triggers."""

    handler: str = Field(
        "",
        description='"package.module:attr", or Lambda style "dir/file.attr" / "file.attr" '
        '(nodejs*: "file.export"); required except for provided* runtimes and a command.',
    )
    runtime: Runtime = Field(
        "process",
        description="process (python3.X is a synonym): Python worker processes; inline: "
        "async, in the daemon; nodejs18.x/20.x/22.x: Node with aws-lambda-ric; provided, "
        "provided.al2, provided.al2023: the executable 'bootstrap' in the code directory "
        "(docs/runtimes.md).",
    )
    code: str | None = Field(
        None,
        description="The function's code directory, relative to the config file's "
        "(default: that directory): LAMBDA_TASK_ROOT, first on sys.path, the working "
        "directory, where bootstrap and node_modules are found.",
    )
    command: list[str] | None = Field(
        None,
        min_length=1,
        description="Run this Lambda Runtime API client instead (e.g. [python, -m, "
        "awslambdaric, app.handler]); a first word with a '/' is relative to the code "
        "directory.",
    )
    timeout: Annotated[Duration, Range(1, 900, duration=True)] = Field(
        3.0, description="Longest an invocation may run."
    )
    memory_mb: Annotated[Int, Range(128, 10240)] = Field(
        128, description="Memory limit per worker process, in MiB."
    )
    concurrency: Annotated[Int, Range(1, 1000)] = Field(
        4, description="Most concurrent invocations (reserved concurrency)."
    )
    min_warm: Annotated[Int, Range(0)] = Field(
        0, description="Workers kept initialised (provisioned concurrency), <= concurrency."
    )
    max_requests: Annotated[Int, Range(0)] = Field(
        0, description="Recycle a worker after this many invocations; 0 = never."
    )
    environment: Annotated[dict[str, str], BeforeValidator(_environment_values)] = Field(
        default_factory=dict, description="Environment variables of the handler."
    )
    inherit_env: Annotated[list[str], AfterValidator(_inherit_names)] = Field(
        default_factory=lambda: list(DEFAULT_INHERIT_ENV),
        description="Variables of the daemon's environment a process worker inherits "
        "(names or fnmatch globs, case-sensitive); [] for none. Never EVENTRUN_* nor "
        "server.auth.tokens_env. inline functions run in the daemon and see all of it.",
    )
    destinations: DestinationsConfig = Field(
        default_factory=DestinationsConfig, description="Async invocation destinations."
    )
    maximum_retry_attempts: Annotated[Int, Range(0, 2)] = Field(
        2, description="Retries of a failed async invocation."
    )
    maximum_event_age: Annotated[Duration, Range(60, 21600, duration=True)] = Field(
        21600.0, description="Oldest an async event may get before it goes to on_failure."
    )
    retry_delay: Annotated[Duration, Range(0.01, 900, duration=True)] = Field(
        60.0,
        description="Wait before the first retry of a failed async invocation; doubles for "
        "the second (Lambda: 1 min, then 2 min).",
    )
    triggers: list[TriggerConfig] = Field(
        default_factory=list, description="Event sources that invoke this function."
    )

    @model_validator(mode="after")
    def _handler_form(self) -> FunctionConfig:
        value = self.handler
        if self.runtime == "inline" and self.command:
            raise problem(
                "inline functions run in the daemon; drop 'command' or pick another runtime",
                at="command",
                got=NO_VALUE,
            )
        if self.command or self.runtime in _PROVIDED:
            return self  # any string: the runtime reads _HANDLER its own way
        if not value:
            raise problem("is required", at="handler", got=NO_VALUE)
        if not (_MODULE_HANDLER.fullmatch(value) or _LAMBDA_HANDLER.fullmatch(value)):
            raise problem(
                'must be "package.module:function" or Lambda style "dir/file.function"',
                at="handler",
                got=value,
            )
        if self.runtime.startswith("nodejs") and not _LAMBDA_HANDLER.fullmatch(value):
            raise problem('must be Lambda style "dir/file.export"', at="handler", got=value)
        return self

    @model_validator(mode="after")
    def _warm_within_concurrency(self) -> FunctionConfig:
        if self.min_warm > self.concurrency:
            raise problem(
                f"must be 0..concurrency ({self.concurrency})", at="min_warm", got=self.min_warm
            )
        return self


class Config(ConfigModel):
    """The whole ``eventrun.yaml``."""

    connections: Connections = Field(
        default_factory=Connections, description="Named broker connections."
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="The HTTP server.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="The state store.")
    functions: dict[str, FunctionConfig] = Field(
        default_factory=dict, description="Functions by name (letters, digits, - and _)."
    )
    shutdown_grace: Annotated[Duration, Range(0, 900, duration=True)] = Field(
        25.0, description="How long shutdown waits for in-flight work before giving up."
    )
    bindings: dict[str, Binding] = Field(
        default_factory=dict,
        description="With -t template.yaml: template logical IDs or ARNs bound to a queue on "
        "an SQS connection, a Kafka connection, a directory or a value (docs/sam.md).",
    )

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems = list(cross_check(self))
        if problems:
            raise PydanticCustomError(
                "er_many", "{count} reference problems", {"problems": problems}
            )
        return self

    def connection_for(self, kind: str, name: str | None) -> object | None:
        """The connection model a trigger kind (or destination kind) refers to by name."""
        section = connection_section(kind)
        if section is None or name is None:
            return None
        found: object | None = getattr(self.connections, section, {}).get(name)
        return found


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config and where it came from (relative paths resolve against ``dir``)."""

    path: Path
    """The config file, absolute."""
    dir: Path
    """The config file's directory, absolute."""
    config: Config

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """``path`` resolved against the config directory (absolute paths unchanged)."""
        return self.dir / path

    def code_dir(self, function: FunctionConfig) -> Path:
        """The function's code directory (task root): its ``code``, else the config's."""
        return self.dir / function.code if function.code else self.dir


def parse_config(text: str, *, filename: str, environ: Mapping[str, str] | None = None) -> Config:
    """Validate YAML text as a config; ``filename`` prefixes every problem line.

    Raises :class:`ConfigError` listing every problem found (YAML syntax errors and
    unset variables stop before model validation).
    """
    env = os.environ if environ is None else environ
    _raw, data = parse_document(text, filename=filename, environ=env)
    return validate_config(data, filename=filename, environ=env)


def parse_document(
    text: str, *, filename: str, environ: Mapping[str, str] | None = None
) -> tuple[object, object]:
    """The YAML document as written and with ``${VAR}`` interpolated, not validated
    (``eventrun run -t`` merges it with a template's translation). Raises ConfigError."""
    env = os.environ if environ is None else environ
    try:
        raw = parse_yaml(text, filename)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    data, problems = interpolate(raw, env, filename)
    if problems:
        raise ConfigError(problems[0], problems)
    return raw, data


def validate_config(
    data: object, *, filename: str, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate an (interpolated) document as a config; problems name ``filename``."""
    env = os.environ if environ is None else environ
    try:
        return config_model().model_validate(data, context={"environ": env})
    except ValidationError as exc:
        lines = translate_errors(exc.errors(), filename, config_model())
        raise ConfigError(lines[0], lines) from None


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read and validate the config file at ``path``.

    ``environ`` (default ``os.environ``) feeds ``${VAR}`` interpolation and the SQS
    region default. Raises :class:`ConfigError` for a missing/unreadable file, a YAML
    syntax error (with its line), unknown keys, wrong types, out-of-range values and
    bad references; messages start with the file's name as given.
    """
    given = Path(path)
    filename = given.name or str(given)
    absolute = given.absolute()
    try:
        text = read_text(absolute, filename)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    config = parse_config(text, filename=filename, environ=environ)
    return LoadedConfig(path=absolute, dir=absolute.parent, config=config)


def config_json_schema() -> dict[str, object]:
    """JSON Schema (2020-12) of ``eventrun.yaml``, for editors (``eventrun schema``)."""
    schema = config_model().model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "eventrun.yaml",
    }


@functools.cache
def config_model() -> type[Config]:
    """:class:`Config` with the trigger and connection kinds of installed plugins.

    Built on first use (not at import, so a plugin's config module may import
    ``eventrun.abc``): subclasses of :class:`TriggerConfig`, :class:`Connections`,
    :class:`FunctionConfig` and :class:`Config` with one more optional field per plugin
    kind, each the plugin's own model, so its keys are validated, reported with their
    key path and documented in the schema exactly like a built-in's.
    """
    plugins = plugin_models()
    if not plugins.triggers and not plugins.connections:
        return Config
    trigger_fields: dict[str, Any] = {
        kind: (model | None, Field(None, description=_summary(model)))
        for kind, model in plugins.triggers.items()
    }
    trigger = create_model(
        "TriggerConfig",
        __base__=TriggerConfig,
        __module__=__name__,
        __doc__=TriggerConfig.__doc__,
        **trigger_fields,
    )
    connection_fields: dict[str, Any] = {
        kind: (dict[str, model], Field(default_factory=dict, description=_summary(model)))  # type: ignore[valid-type]
        for kind, model in plugins.connections.items()
    }
    connections = create_model(
        "Connections",
        __base__=Connections,
        __module__=__name__,
        __doc__=Connections.__doc__,
        **connection_fields,
    )
    base_fn = FunctionConfig.model_fields
    function = create_model(
        "FunctionConfig",
        __base__=FunctionConfig,
        __module__=__name__,
        __doc__=FunctionConfig.__doc__,
        triggers=(list[trigger], base_fn["triggers"]),
    )
    base = Config.model_fields
    return create_model(
        "Config",
        __base__=Config,
        __module__=__name__,
        __doc__=Config.__doc__,
        connections=(
            connections,
            Field(default_factory=connections, description=base["connections"].description),
        ),
        functions=(dict[str, function], base["functions"]),
    )


def _summary(model: type[BaseModel]) -> str:
    """The first line of a plugin model's docstring, for the schema and the docs."""
    doc = (model.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else f"{model.__name__} settings."
