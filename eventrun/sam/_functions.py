"""``AWS::Serverless::Function`` (and ``AWS::Lambda::Function``) -> an eventrun function.

``Handler``; ``CodeUri`` / ``Code`` (a local directory relative to the template; inline
code is written beside it) -> ``code``; ``Runtime`` python3.x -> ``process`` (runtimes of
other open issues pass through once the config accepts them, else are reported as
unsupported naming the issue); ``Timeout``, ``MemorySize``; ``Environment.Variables``
(booleans and numbers become text, as on Lambda); ``Layers`` of the template -> the
function's ``PYTHONPATH``; ``ReservedConcurrentExecutions`` -> ``concurrency``;
``FunctionUrlConfig`` -> an ``http`` catch-all route; ``EventInvokeConfig``
(``MaximumEventAgeInSeconds``, ``MaximumRetryAttempts``,
``DestinationConfig`` of type SQS or Lambda) and ``DeadLetterQueue`` -> ``destinations``.
Properties with no local meaning (``Policies``, ``Role``, ``Architectures``,
``AutoPublishAlias``, ``Tracing``...) are accepted and noted.
"""

from __future__ import annotations

import os
from typing import Any, get_args

from eventrun.config import FunctionConfig

from ._errors import TemplateProblem, as_list, as_mapping, as_number
from ._events import MAPPERS, EventContext, Unsupported, cors_v2, unsupported_reason
from ._resources import LAYER_TYPES
from ._template import Template

__all__ = ["RUNTIMES_NOT_YET", "translate_function"]

RUNTIMES_NOT_YET: dict[str, str] = {}
"""Runtime families another open issue brings (none left: issue 24 brought nodejs and
provided); a runtime the config's ``runtime`` accepts (SPEC §12: ``nodejs20.x``,
``provided.al2023``...) is passed through as it is."""

_RUNTIMES = frozenset(
    str(v)
    for v in get_args(FunctionConfig.model_fields["runtime"].annotation)
    if isinstance(v, str)
) - {"process", "inline"}

_IGNORED = (
    "AutoPublishAlias",
    "DeploymentPreference",
    "Policies",
    "Role",
    "Architectures",
    "Tracing",
    "VpcConfig",
    "Tags",
    "Description",
    "KmsKeyArn",
    "ProvisionedConcurrencyConfig",
    "SnapStart",
    "EphemeralStorage",
    "LoggingConfig",
    "PermissionsBoundary",
    "RuntimeManagementConfig",
)


def _runtime(tpl: Template, lid: str, props: dict[str, Any], path: list[str | int]) -> str:
    runtime = tpl.resolver.resolve(props.get("Runtime"), [*path, "Runtime"])
    if props.get("PackageType") == "Image" or runtime is None:
        raise Unsupported(
            [*path, "Runtime"],
            f"function {lid}: container image functions are not supported by eventrun "
            "(set Runtime and CodeUri)",
        )
    text = str(runtime)
    if text.startswith("python3."):
        return "process"
    if text in _RUNTIMES:  # issue #24's runtimes, once this eventrun has them
        return text
    for family, issue in RUNTIMES_NOT_YET.items():
        if text.startswith(family):
            raise Unsupported(
                [*path, "Runtime"],
                f"function {lid}: not supported yet by this eventrun: Runtime {text} ({issue})",
            )
    raise Unsupported(
        [*path, "Runtime"],
        f"function {lid}: not supported by eventrun: Runtime {text} (supported: python3.X, "
        + ", ".join(sorted(r for r in _RUNTIMES if not r.startswith("python")))
        + ", or a command: running a Runtime API client)",
    )


def _code(tpl: Template, props: dict[str, Any], path: list[str | int]) -> str | None:
    """The function's code directory, relative to the template (None: the template's own).

    ``CodeUri`` (``Code`` for ``AWS::Lambda::Function``) is a local directory; inline code
    (``InlineCode``, ``Code.ZipFile``) is written to ``.eventrun/sam/LogicalId/FILE.py``
    beside the template, FILE being the handler's module."""
    key = "Code" if "Code" in props else "CodeUri"
    uri = tpl.resolver.resolve(props.get(key), [*path, key])
    inline_key = "InlineCode" if "InlineCode" in props else None
    if isinstance(uri, dict) and "ZipFile" in uri:
        inline_key, uri = f"{key}.ZipFile", None
    if inline_key is not None:
        return _inline(tpl, props, path, inline_key)
    if uri is None:
        return None
    if not isinstance(uri, str) or uri.startswith("s3://") or uri.endswith((".zip", ".jar")):
        raise TemplateProblem(
            [*path, key],
            "must be a local directory relative to the template (an S3 location or a zip "
            "file cannot be run locally)",
            uri,
        )
    directory = (tpl.dir / uri).resolve()
    if not directory.is_dir():
        raise TemplateProblem([*path, key], f"must be a directory ({directory})", uri)
    text = uri.rstrip("/") or "."
    return None if text == "." else text


def _inline(tpl: Template, props: dict[str, Any], path: list[str | int], key: str) -> str:
    where: list[str | int] = [*path, *key.split(".")]
    source = props.get("InlineCode") if key == "InlineCode" else props["Code"]["ZipFile"]
    code = tpl.resolver.string(source, where)
    handler = tpl.resolver.string(props.get("Handler"), [*path, "Handler"])
    module = handler.rpartition(".")[0] or "index"
    if not module.replace("_", "a").isalnum():
        raise TemplateProblem([*path, "Handler"], "must be FILE.function with inline code", handler)
    lid = str(path[1])
    rel = f".eventrun/sam/{lid}"
    target = tpl.dir / rel / f"{module}.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.read_text(encoding="utf-8") != code:
        target.write_text(code, encoding="utf-8")
    return rel


def _layers(
    tpl: Template, lid: str, props: dict[str, Any], path: list[str | int], notes: list[str]
) -> list[str]:
    """Import paths of the function's layers that are ``AWS::Serverless::LayerVersion``
    resources of the template: Lambda's ``python/`` and ``python/lib/python3.X/
    site-packages`` sub-directories of the layer's ``ContentUri`` (the directory itself
    when it has no ``python/``), absolute, for the function's ``PYTHONPATH`` as Lambda
    puts ``/opt/python`` there."""
    layers = as_list(
        tpl.resolver.resolve(props.get("Layers"), [*path, "Layers"]), [*path, "Layers"]
    )
    out: list[str] = []
    own = {tpl.refs.layer_arn(layer): layer for layer in tpl.of_type(*LAYER_TYPES)}
    for i, arn in enumerate(layers):
        layer = own.get(str(arn))
        if layer is None:
            notes.append(f"{lid}.Layers[{i}]: {arn} is not a layer of this template: ignored")
            continue
        key = "ContentUri" if "ContentUri" in tpl.props(layer) else "Content"
        lpath: list[str | int] = ["Resources", layer, "Properties", key]
        uri = tpl.resolver.resolve(tpl.props(layer).get(key), lpath)
        if not isinstance(uri, str) or uri.startswith("s3://") or uri.endswith(".zip"):
            raise TemplateProblem(lpath, "must be a local directory relative to the template", uri)
        root = (tpl.dir / uri).resolve()
        if not root.is_dir():
            raise TemplateProblem(lpath, f"must be a directory ({root})", uri)
        python = root / "python"
        if python.is_dir():
            out.append(str(python))
            out.extend(str(p) for p in sorted(python.glob("lib/python3*/site-packages")))
        else:
            out.append(str(root))
    return out


def _function_url(
    tpl: Template, props: dict[str, Any], path: list[str | int]
) -> dict[str, Any] | None:
    """``FunctionUrlConfig`` -> an ``http`` trigger serving every path (``/{proxy+}``, any
    method, payload 2.0, tried after every other route): ``AuthType: NONE`` is public,
    ``AWS_IAM`` needs the daemon's bearer token; ``Cors`` -> ``cors``."""
    where: list[str | int] = [*path, "FunctionUrlConfig"]
    config = as_mapping(tpl.resolver.resolve(props.get("FunctionUrlConfig"), where), where)
    if not config:
        return None
    auth = str(config.get("AuthType", "AWS_IAM"))
    if auth not in ("NONE", "AWS_IAM"):
        raise TemplateProblem([*where, "AuthType"], "must be NONE or AWS_IAM", auth)
    out: dict[str, Any] = {
        "path": "/{proxy+}",
        "methods": ["*"],
        "auth": "none" if auth == "NONE" else "token",
    }
    if "Cors" in config:
        out["cors"] = cors_v2(config["Cors"], [*where, "Cors"])
    return {"http": out}


def translate_function(
    tpl: Template,
    lid: str,
    connections: dict[str, Any],
    notes: list[str],
    events: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[Unsupported]]:
    """The eventrun function for ``lid`` and the events skipped as unsupported."""
    path: list[str | int] = ["Resources", lid, "Properties"]
    props = tpl.props(lid)
    r = tpl.resolver
    fn: dict[str, Any] = {"handler": r.string(props.get("Handler"), [*path, "Handler"])}
    if "Handler" not in props:
        raise TemplateProblem([*path, "Handler"], "is required (file.function)")
    fn["runtime"] = _runtime(tpl, lid, props, path)
    code = _code(tpl, props, path)
    if code is not None:
        fn["code"] = code
    for key, name, kind in (
        ("Timeout", "timeout", float),
        ("MemorySize", "memory_mb", int),
        ("ReservedConcurrentExecutions", "concurrency", int),
    ):
        if key in props:
            fn[name] = as_number(r.string(props[key], [*path, key]), [*path, key], kind)
    env = as_mapping(
        r.resolve(props.get("Environment"), [*path, "Environment"]), [*path, "Environment"]
    )
    vpath = [*path, "Environment", "Variables"]
    variables = as_mapping(env.get("Variables"), vpath)
    if variables:
        fn["environment"] = {
            str(k): r.string(v, [*path, "Environment", "Variables", k])
            for k, v in variables.items()
        }
    _invoke_config(tpl, lid, props, path, fn, connections)
    layer_paths = _layers(tpl, lid, props, path, notes)
    if layer_paths:
        env_vars = fn.setdefault("environment", {})
        own = env_vars.get("PYTHONPATH")
        env_vars["PYTHONPATH"] = os.pathsep.join([*layer_paths, *([own] if own else [])])
    for key in _IGNORED:
        if key in props:
            notes.append(f"{lid}.{key}: ignored (no local meaning)")
    triggers, skipped = _events(tpl, lid, props, path, connections, notes, events)
    url = _function_url(tpl, props, path)
    if url is not None:
        triggers.append(url)
    if triggers:
        fn["triggers"] = triggers
    return fn, skipped


def _events(
    tpl: Template,
    lid: str,
    props: dict[str, Any],
    path: list[str | int],
    connections: dict[str, Any],
    notes: list[str],
    named: dict[str, dict[str, Any]] | None,
) -> tuple[list[dict[str, Any]], list[Unsupported]]:
    triggers: list[dict[str, Any]] = []
    skipped: list[Unsupported] = []
    events = as_mapping(props.get("Events"), [*path, "Events"])
    for name, event in events.items():
        epath: list[str | int] = [*path, "Events", name]
        kind = str(event.get("Type") if isinstance(event, dict) else None)
        mapper = MAPPERS.get(kind)
        if mapper is None:
            message = f"event {lid}.{name}: {unsupported_reason(kind)}"
            skipped.append(Unsupported([*epath, "Type"], message))
            continue
        eprops = event.get("Properties") or {}
        ctx = EventContext(tpl, lid, str(name), eprops, [*epath, "Properties"])
        trigger = mapper(ctx)
        for section, named in ctx.connections.items():
            connections.setdefault(section, {}).update(named)
        notes.extend(ctx.notes)
        if trigger is not None:
            triggers.append(trigger)
            if named is not None:
                named[f"{lid}.{name}"] = trigger
    return triggers, skipped


def _invoke_config(
    tpl: Template,
    lid: str,
    props: dict[str, Any],
    path: list[str | int],
    fn: dict[str, Any],
    connections: dict[str, Any],
) -> None:
    r = tpl.resolver
    cpath: list[str | int] = [*path, "EventInvokeConfig"]
    config = as_mapping(r.resolve(props.get("EventInvokeConfig"), cpath), cpath)
    for key, name, kind in (
        ("MaximumEventAgeInSeconds", "maximum_event_age", float),
        ("MaximumRetryAttempts", "maximum_retry_attempts", int),
    ):
        if key in config:
            fn[name] = as_number(config[key], [*cpath, key], kind)
    destinations: dict[str, str] = {}
    dconfig = as_mapping(config.get("DestinationConfig"), [*cpath, "DestinationConfig"])
    for key, field in (("OnSuccess", "on_success"), ("OnFailure", "on_failure")):
        dest = as_mapping(dconfig.get(key), [*cpath, "DestinationConfig", key])
        if not dest:
            continue
        dpath = [*cpath, "DestinationConfig", key, "Destination"]
        target = dest.get("Destination")
        if target is None and str(dest.get("Type")) == "SQS":
            # SAM creates a queue for a destination of type SQS without one
            name = f"{tpl.stack}-{lid}EventInvokeConfig{key}Queue"
            tpl.extra_queues.append(name)
            target = f"arn:aws:sqs:{tpl.region}:{tpl.refs.account}:{name}"
        destinations[field] = tpl.refs.destination(target, dest.get("Type"), dpath, connections)
    dlq = as_mapping(
        r.resolve(props.get("DeadLetterQueue"), [*path, "DeadLetterQueue"]),
        [*path, "DeadLetterQueue"],
    )
    if dlq and "on_failure" not in destinations:
        if str(dlq.get("Type")) != "SQS":
            raise TemplateProblem(
                [*path, "DeadLetterQueue", "Type"],
                "must be SQS (an SNS topic has no local counterpart)",
                dlq.get("Type"),
            )
        destinations["on_failure"] = tpl.refs.destination(
            dlq.get("TargetArn"), "SQS", [*path, "DeadLetterQueue", "TargetArn"], connections
        )
    if destinations:
        fn["destinations"] = destinations
