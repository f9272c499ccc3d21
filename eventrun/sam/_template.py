"""A loaded SAM template: parameters, pseudo parameters, Globals, and its resolver.

``Parameters`` take their override (``--parameter-overrides Key=Value``), else their
``Default``; ``AllowedValues`` and ``AllowedPattern`` are checked; ``Number`` values stay
text, ``CommaDelimitedList`` / ``List<...>`` become lists (what ``!Ref`` of them gives in
CloudFormation). Pseudo parameters: ``AWS::Region`` from ``AWS_REGION`` /
``AWS_DEFAULT_REGION`` (else us-east-1), ``AWS::AccountId`` 123456789012,
``AWS::StackName`` (``--stack-name``, default the template directory's name),
``AWS::Partition`` aws, ``AWS::URLSuffix`` amazonaws.com.

``Globals.Function`` is merged into each ``AWS::Serverless::Function`` by SAM's rules:
mappings merge (the resource's keys win), lists concatenate (globals first), any other
value of the resource replaces the global; ``IgnoreGlobals`` (``"*"`` or a list of
property names) opts a function out. Resources whose ``Condition`` is false are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import TemplateProblem, as_mapping
from ._intrinsics import Resolver
from ._resources import References
from ._yaml import Node, parse_template

__all__ = ["ACCOUNT", "Template", "merge_globals"]

ACCOUNT = "123456789012"
_TRANSFORM = "AWS::Serverless-2016-10-31"
_INTRINSIC = re.compile(r"Ref|Condition|Fn::\w+")


def _is_intrinsic(value: object) -> bool:
    return (
        isinstance(value, dict)
        and len(value) == 1
        and bool(_INTRINSIC.fullmatch(next(iter(value))))
    )


def merge_globals(glob: Any, local: Any) -> Any:
    """SAM's merge: maps merge (local wins per key), lists concatenate, else local."""
    if isinstance(glob, dict) and isinstance(local, dict):
        if _is_intrinsic(glob) or _is_intrinsic(local):
            return local
        out = Node(glob)
        out.line = getattr(local, "line", None)
        out.lines = {**getattr(glob, "lines", {}), **getattr(local, "lines", {})}
        for key, value in local.items():
            out[key] = merge_globals(glob[key], value) if key in glob else value
        return out
    if isinstance(glob, list) and isinstance(local, list):
        return [*glob, *local]
    return local


class Template:
    """The parsed template with its parameters resolved and Globals merged."""

    def __init__(
        self,
        path: Path,
        *,
        overrides: Mapping[str, str],
        stack_name: str | None,
        bindings: Mapping[str, Any],
        sqs_endpoints: Mapping[str, str | None],
        environ: Mapping[str, str],
    ) -> None:
        self.path = path
        self.dir = path.parent
        self.filename = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"{path.name}: template not found ({path})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path.name}: cannot read the template ({exc})") from None
        self.data = parse_template(text, path.name)
        try:
            self._build(overrides, stack_name, bindings, sqs_endpoints, environ)
        except TemplateProblem as exc:
            exc.template = self.data
            raise

    def _build(
        self,
        overrides: Mapping[str, str],
        stack_name: str | None,
        bindings: Mapping[str, Any],
        sqs_endpoints: Mapping[str, str | None],
        environ: Mapping[str, str],
    ) -> None:
        transform = self.data.get("Transform")
        transforms = transform if isinstance(transform, list) else [transform]
        self.is_sam = _TRANSFORM in transforms
        self.extra_queues: list[str] = []
        """Queues SAM would create that are not resources (EventInvokeConfig's)."""
        self.region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.stack = stack_name or _stack_name(self.dir)
        resources = self.data.get("Resources")
        if not isinstance(resources, dict) or not resources:
            raise TemplateProblem(["Resources"], "must be a mapping of resources", resources)
        self.pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": self.stack,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT}:stack/"
            f"{self.stack}/eventrun",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
        }
        self.parameters = self._parameters(overrides)
        imports = {k: b.value for k, b in bindings.items() if b.value is not None}
        self.refs = References(
            resources=resources,
            bindings=bindings,
            sqs_endpoints=sqs_endpoints,
            environ=environ,
            region=self.region,
            account=ACCOUNT,
            stack=self.stack,
        )
        self.resolver = Resolver(
            parameters=self.parameters,
            pseudo=self.pseudo,
            conditions=self.data.get("Conditions") or {},
            mappings=self.data.get("Mappings") or {},
            imports=imports,
            ref=self.refs.ref,
            get_att=self.refs.get_att,
        )
        self.refs.resolver = self.resolver
        self.resources = self._present(resources)
        self.refs.resources = self.resources
        self._merge_function_globals()

    def _parameters(self, overrides: Mapping[str, str]) -> dict[str, object]:
        declared = self.data.get("Parameters") or {}
        if not isinstance(declared, dict):
            raise TemplateProblem(["Parameters"], "must be a mapping", declared)
        unknown = [k for k in overrides if k not in declared]
        if unknown:
            names = ", ".join(declared) or "none declared"
            raise TemplateProblem(
                [],
                f"--parameter-overrides names no parameter of the template ({names})",
                unknown[0],
            )
        out: dict[str, object] = {}
        for name, spec in declared.items():
            path: list[str | int] = ["Parameters", name]
            spec = spec if isinstance(spec, dict) else {}
            if name in overrides:
                value: object = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise TemplateProblem(
                    path, f"has no Default: give it with --parameter-overrides {name}=VALUE"
                )
            kind = str(spec.get("Type", "String"))
            if isinstance(value, bool):
                value = "true" if value else "false"
            if kind.startswith("AWS::SSM::Parameter::Value") and name not in overrides:
                raise TemplateProblem(
                    path,
                    f"is read from SSM on AWS: give it with --parameter-overrides {name}=VALUE",
                )
            allowed = spec.get("AllowedValues")
            if isinstance(allowed, list) and str(value) not in [str(a) for a in allowed]:
                raise TemplateProblem(
                    path, "must be one of " + ", ".join(str(a) for a in allowed), value
                )
            pattern = spec.get("AllowedPattern")
            if isinstance(pattern, str) and not re.fullmatch(pattern, str(value)):
                raise TemplateProblem(path, f"must match AllowedPattern {pattern}", value)
            if kind == "CommaDelimitedList" or kind.startswith("List<"):
                value = (
                    value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
                )
            elif isinstance(value, int | float):
                value = str(value)
            out[name] = value
        return out

    def _present(self, resources: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for lid, res in resources.items():
            if not isinstance(res, dict) or not isinstance(res.get("Type"), str):
                raise TemplateProblem(["Resources", lid], "must be a mapping with a Type", res)
            cond = res.get("Condition")
            if isinstance(cond, str) and not self.resolver.condition(
                cond, ["Resources", lid, "Condition"]
            ):
                continue
            out[lid] = res
        return out

    def _merge_function_globals(self) -> None:
        globs = as_mapping(self.data.get("Globals"), ["Globals"])
        glob = as_mapping(globs.get("Function"), ["Globals", "Function"])
        if not glob:
            return
        for lid, res in self.resources.items():
            if res["Type"] != "AWS::Serverless::Function":
                continue
            props = as_mapping(res.get("Properties"), ["Resources", lid, "Properties"]) or Node()
            ignore = props.get("IgnoreGlobals")
            if ignore == "*":
                continue
            skip = set(ignore) if isinstance(ignore, list) else set()
            merged = merge_globals({k: v for k, v in glob.items() if k not in skip}, props)
            res["Properties"] = merged

    def of_type(self, *types: str) -> list[str]:
        return [lid for lid, res in self.resources.items() if res["Type"] in types]

    def props(self, lid: str) -> dict[str, Any]:
        return as_mapping(self.resources[lid].get("Properties"), ["Resources", lid, "Properties"])


def _stack_name(directory: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9-]", "-", directory.resolve().name).strip("-")
    return name or "eventrun"
