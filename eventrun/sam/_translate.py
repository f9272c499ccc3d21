"""A SAM template (with an optional eventrun.yaml beside it) -> a validated config.

The eventrun file (``-c``) supplies ``server``, ``store``, ``connections``,
``shutdown_grace`` and ``bindings``, and may add functions or replace a translated one
(same name: the logical ID). The result validates exactly like an eventrun.yaml, and
:func:`printable` is that eventrun.yaml (``eventrun check -t ... --print``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eventrun.config import Config, LoadedConfig, parse_document, validate_config
from eventrun.exceptions import ConfigError

from ._errors import TemplateProblem, problem_line, unsupported_line
from ._events import Unsupported
from ._functions import translate_function
from ._resources import FUNCTION_TYPES, QueueInfo
from ._rules import attach_resources
from ._template import Template

__all__ = ["SamApp", "load_sam", "printable"]

_FROM_CONFIG = ("connections", "server", "store", "shutdown_grace", "bindings")
_NOTED_TYPES = {
    "AWS::Serverless::SimpleTable": "not emulated: point the handler at a DynamoDB "
    "endpoint (AWS_ENDPOINT_URL_DYNAMODB)",
    "AWS::DynamoDB::Table": "not emulated: point the handler at a DynamoDB endpoint "
    "(AWS_ENDPOINT_URL_DYNAMODB)",
}
_QUIET_TYPES = (
    "AWS::SQS::Queue",
    "AWS::S3::Bucket",
    "AWS::Serverless::Api",
    "AWS::Serverless::HttpApi",
    "AWS::Serverless::LayerVersion",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Events::Rule",
    "AWS::Scheduler::Schedule",
    "AWS::Lambda::Permission",
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::SQS::QueuePolicy",
    "AWS::Logs::LogGroup",
)


@dataclass
class SamApp:
    """A translated template: the config to run and what the translation left out."""

    loaded: LoadedConfig
    template: Template
    document: dict[str, Any]
    """The equivalent eventrun.yaml (with the -c file's sections as written)."""
    unsupported: list[str] = field(default_factory=list)
    """One line per event or function that cannot run here (``--skip-unsupported``)."""
    notes: list[str] = field(default_factory=list)
    """Properties accepted and ignored, disabled events."""
    queues: list[QueueInfo] = field(default_factory=list)
    extra_queues: list[str] = field(default_factory=list)
    buckets: list[Path] = field(default_factory=list)
    """Directories standing for the template's buckets (created by ``run``)."""
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``FUNCTION.EVENT`` -> its trigger (``{KIND: {...}}``), for ``generate-event -t``."""


def load_sam(
    template: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, str] | None = None,
    stack_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    skip_unsupported: bool = True,
) -> SamApp:
    """Translate ``template`` (merged with the eventrun file ``config``) and validate it.

    Raises :class:`ConfigError` naming the template, the property path and line, the
    value and what is expected; with ``skip_unsupported=False`` an unsupported event or
    runtime is an error too (each one listed).
    """
    env = os.environ if environ is None else environ
    path = Path(template).absolute()
    raw_cfg: dict[str, Any] = {}
    data_cfg: dict[str, Any] = {}
    base = Config()
    if config is not None:
        cfg_path = Path(config)
        try:
            text = cfg_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{cfg_path.name}: cannot read ({exc.strerror or exc})") from None
        raw, data = parse_document(text, filename=cfg_path.name, environ=env)
        base = validate_config(data, filename=cfg_path.name, environ=env)
        raw_cfg = raw if isinstance(raw, dict) else {}
        data_cfg = data if isinstance(data, dict) else {}
    try:
        tpl = Template(
            path,
            overrides=overrides or {},
            stack_name=stack_name,
            bindings=base.bindings,
            sqs_endpoints={k: v.endpoint_url for k, v in base.connections.sqs.items()},
            environ=env,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except TemplateProblem as exc:
        line = problem_line(path.name, exc.template, exc)
        raise ConfigError(line) from None
    app = _translate(tpl, raw_cfg, data_cfg, env)
    if app.unsupported and not skip_unsupported:
        lines = [
            *app.unsupported,
            f"{path.name}: run with --skip-unsupported to start without them",
        ]
        raise ConfigError(lines[0], lines)
    return app


def _translate(
    tpl: Template, raw_cfg: dict[str, Any], data_cfg: dict[str, Any], env: Mapping[str, str]
) -> SamApp:
    problems: list[str] = []
    unsupported: list[str] = []
    notes: list[str] = []
    connections: dict[str, Any] = {}
    functions: dict[str, Any] = {}
    events: dict[str, dict[str, Any]] = {}
    for lid in tpl.of_type(*FUNCTION_TYPES):
        try:
            fn, skipped = translate_function(tpl, lid, connections, notes, events)
        except TemplateProblem as exc:
            problems.append(problem_line(tpl.filename, tpl.data, exc))
            continue
        except Unsupported as exc:
            unsupported.append(unsupported_line(tpl.filename, tpl.data, exc.path, exc.message))
            continue
        unsupported.extend(
            unsupported_line(tpl.filename, tpl.data, s.path, s.message) for s in skipped
        )
        functions[lid] = fn
    attach_resources(tpl, functions, problems, unsupported)
    queues: list[QueueInfo] = []
    try:
        queues = tpl.refs.queues()
    except TemplateProblem as exc:
        problems.append(problem_line(tpl.filename, tpl.data, exc))
    if problems:
        raise ConfigError(problems[0], problems)
    for lid, res in tpl.resources.items():
        kind = res["Type"]
        if kind in _NOTED_TYPES:
            notes.append(f"{lid} ({kind}): {_NOTED_TYPES[kind]}")
        elif kind not in _QUIET_TYPES and kind not in FUNCTION_TYPES:
            notes.append(f"{lid} ({kind}): ignored (no local counterpart)")
    document = _document(raw_cfg, _escape(connections), _escape(functions))
    filename = f"{tpl.filename} (translated)"
    data = _document(data_cfg, connections, functions)
    config = validate_config(data, filename=filename, environ=env)
    loaded = LoadedConfig(path=tpl.path, dir=tpl.dir, config=config)
    buckets = [
        tpl.dir / t.filewatch.path
        for fn in config.functions.values()
        for t in fn.triggers
        if t.filewatch is not None
    ]
    return SamApp(
        loaded=loaded,
        template=tpl,
        document=document,
        unsupported=unsupported,
        notes=notes,
        queues=queues,
        extra_queues=tpl.extra_queues,
        buckets=buckets,
        events=events,
    )


def _document(
    raw_cfg: dict[str, Any], connections: dict[str, Any], functions: dict[str, Any]
) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    conns: dict[str, Any] = {k: dict(v) for k, v in connections.items()}
    for section, named in (raw_cfg.get("connections") or {}).items():
        conns.setdefault(section, {}).update(named or {})
    if conns:
        doc["connections"] = conns
    for key in _FROM_CONFIG:
        if key != "connections" and key in raw_cfg:
            doc[key] = raw_cfg[key]
    doc["functions"] = {**functions, **(raw_cfg.get("functions") or {})}
    return doc


def printable(app: SamApp) -> str:
    """The equivalent eventrun.yaml, with a header naming the template and what was left out."""
    lines = [
        f"# eventrun.yaml equivalent to {app.template.filename} "
        f"(stack {app.template.stack}); paths are relative to the template's directory",
    ]
    lines += [f"# skipped: {u}" for u in app.unsupported]
    lines += [f"# note: {n}" for n in app.notes]
    body = yaml.safe_dump(app.document, sort_keys=False, allow_unicode=True)
    return "\n".join(lines) + "\n" + body


def _escape(value: Any) -> Any:
    """``$`` written as ``$$``: the printed file is read with ``${VAR}`` interpolation."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value
