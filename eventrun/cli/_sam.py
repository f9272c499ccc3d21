"""``-t template.yaml``: the options every config-reading command shares, and loading.

``--parameter-overrides`` takes SAM CLI's syntax: ``Key=Value`` pairs separated by spaces
(quote values with spaces), or ``ParameterKey=K,ParameterValue=V``; it may be repeated.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["parse_overrides", "template_options"]

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
