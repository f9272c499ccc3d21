"""``-t template.yaml``: the options every config-reading command shares, and loading.

``--parameter-overrides`` takes SAM CLI's syntax: ``Key=Value`` pairs separated by spaces,
in one quoted argument or as separate arguments (``--parameter-overrides A=1 B=2``: every
following ``K=V`` word belongs to it), or ``ParameterKey=K,ParameterValue=V``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["SamCommand", "parse_overrides", "template_options"]

F = TypeVar("F", bound=Callable[..., Any])


def parse_overrides(values: tuple[str, ...]) -> dict[str, str]:
    """``("A=1 B='x y'", "ParameterKey=C,ParameterValue=3")`` -> ``{A: 1, B: x y, C: 3}``."""
    out: dict[str, str] = {}
    for value in values:
        for item in shlex.split(value):
            if item.startswith("ParameterKey="):
                parts = dict(p.split("=", 1) for p in item.split(",") if "=" in p)
                key, val = parts.get("ParameterKey"), parts.get("ParameterValue")
                if not key or val is None:
                    raise click.BadParameter(
                        f"{item!r}: expected ParameterKey=KEY,ParameterValue=VALUE",
                        param_hint="--parameter-overrides",
                    )
            else:
                key, sep, val = item.partition("=")
                if not sep or not key:
                    raise click.BadParameter(
                        f"{item!r}: expected KEY=VALUE", param_hint="--parameter-overrides"
                    )
            out[key] = val
    return out


class SamCommand(click.Command):
    """A command whose ``--parameter-overrides`` takes every following ``K=V`` word, as
    SAM CLI's does (``--parameter-overrides A=1 B=2``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            out.append(arg)
            if arg == "--parameter-overrides" and rest:
                out.append(rest.pop(0))
                while rest and not rest[0].startswith("-") and "=" in rest[0]:
                    # one word is one pair, spaces and all
                    out += ["--parameter-overrides", shlex.quote(rest.pop(0))]
        return super().parse_args(ctx, out)


def template_options(f: F) -> F:
    """-t/--template, --parameter-overrides and --stack-name."""
    f = click.option(
        "--stack-name",
        default=None,
        help="AWS::StackName and the default queue-name prefix (default: the template "
        "directory's name).",
    )(f)
    f = click.option(
        "--parameter-overrides",
        "parameter_overrides",
        multiple=True,
        help="Template parameters, SAM CLI syntax: 'Key=Value Key2=Value2'.",
    )(f)
    f = click.option(
        "-t",
        "--template",
        default=None,
        help="An AWS SAM / CloudFormation template to run (with -c: the eventrun file adds "
        "server, store, connections, bindings and functions).",
    )(f)
    return f


def template_event(app: Any, name: str) -> dict[str, Any]:
    """The sample event the template's event ``FUNCTION.EVENT`` delivers: an SQS event from
    its queue, a schedule's ``Input`` (or the Scheduled Event), an S3 event from its bucket,
    an HTTP event of its payload format on its path, a Kafka event from its topic."""
    from eventrun.cli import _samples

    trigger = app.events.get(name)
    if trigger is None:
        names = ", ".join(sorted(app.events)) or "none"
        raise click.BadParameter(f"no event {name!r} in the template (have: {names})")
    ((kind, spec),) = trigger.items()
    region, account = app.template.region, "123456789012"
    if kind == "sqs":
        event = _samples.sqs()
        record = event["Records"][0]
        record["eventSourceARN"] = f"arn:aws:sqs:{region}:{account}:{spec['queue_name']}"
        record["awsRegion"] = region
        return event
    if kind == "cron":
        if spec.get("input") is not None:
            return dict(spec["input"]) if isinstance(spec["input"], dict) else spec["input"]
        event = _samples.schedule()
        event["region"], event["account"] = region, account
        return event
    if kind == "filewatch":
        event = _samples.s3()
        bucket = event["Records"][0]["s3"]["bucket"]
        bucket["name"] = spec["path"].rstrip("/").rsplit("/", 1)[-1]
        bucket["arn"] = f"arn:aws:s3:::{bucket['name']}"
        return event
    if kind == "http":
        method = next((m for m in spec.get("methods", ["GET"]) if m != "*"), "GET")
        if spec.get("payload_format") == "1.0":
            return _samples.http_v1(method, spec["path"], spec.get("stage", "$default"))
        return _samples.http(method, spec["path"])
    event = _samples.kafka()
    topic = spec.get("topics", ["mytopic"])[0]
    event["records"] = {f"{topic}-0": event["records"]["mytopic-0"]}
    event["records"][f"{topic}-0"][0]["topic"] = topic
    if spec.get("event_source_arn"):
        event = {
            "eventSource": "aws:kafka",
            "eventSourceArn": spec["event_source_arn"],
            **{k: v for k, v in event.items() if k != "eventSource"},
        }
    return event
