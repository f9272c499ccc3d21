"""Resources that attach events to functions outside ``Events``.

``AWS::Events::Rule`` with a ``ScheduleExpression`` and ``AWS::Scheduler::Schedule``
targeting a function of the template become cron triggers of that function (``Input``
replaces the event); a rule with an ``EventPattern`` is unsupported. A plain
``AWS::Lambda::EventSourceMapping`` from an SQS queue is read as an ``SQS`` event.
"""

from __future__ import annotations

import json
from typing import Any

from ._errors import TemplateProblem, problem_line, unsupported_line
from ._events import MAPPERS, EventContext, Unsupported, enabled
from ._resources import FUNCTION_TYPES
from ._template import Template

__all__ = ["attach_resources"]


def attach_resources(
    tpl: Template, functions: dict[str, Any], problems: list[str], unsupported: list[str]
) -> None:
    """Add the triggers these resources give to the translated ``functions``."""
    for lid in tpl.of_type("AWS::Events::Rule", "AWS::Scheduler::Schedule"):
        try:
            for fn_lid, trigger in rule_targets(tpl, lid):
                if fn_lid in functions:
                    functions[fn_lid].setdefault("triggers", []).append(trigger)
        except TemplateProblem as exc:
            problems.append(problem_line(tpl.filename, tpl.data, exc))
        except Unsupported as exc:
            unsupported.append(unsupported_line(tpl.filename, tpl.data, exc.path, exc.message))
    for lid in tpl.of_type("AWS::Lambda::EventSourceMapping"):
        try:
            _event_source_mapping(tpl, lid, functions, unsupported)
        except TemplateProblem as exc:
            problems.append(problem_line(tpl.filename, tpl.data, exc))


def rule_targets(template: Template, lid: str) -> list[tuple[str, dict[str, Any]]]:
    """``AWS::Events::Rule`` (with a ``ScheduleExpression``) and ``AWS::Scheduler::Schedule``
    resources -> ``(function logical id, cron trigger)`` for each target that is a function
    of the template. A rule with an ``EventPattern`` is reported as unsupported."""
    res = template.resources[lid]
    path: list[str | int] = ["Resources", lid, "Properties"]
    ctx = EventContext(template, lid, lid, template.props(lid), path)
    if not enabled(ctx):
        return []
    if res["Type"] == "AWS::Events::Rule":
        if "ScheduleExpression" not in ctx.props:
            raise Unsupported(
                [*path, "EventPattern"],
                f"rule {lid}: not supported by eventrun: an EventBridge rule with an "
                "EventPattern (eventrun has no EventBridge bus, only schedules)",
            )
        schedule = {"schedule": str(ctx.get("ScheduleExpression"))}
        targets = ctx.get("Targets") or []
        tpath: list[str | int] = [*path, "Targets"]
    else:
        schedule = {"schedule": str(ctx.get("ScheduleExpression"))}
        zone = ctx.get("ScheduleExpressionTimezone")
        if zone:
            schedule["timezone"] = str(zone)
        targets = [ctx.get("Target")]
        tpath = [*path, "Target"]
    out = []
    for i, target in enumerate(targets):
        arn = target.get("Arn") if isinstance(target, dict) else None
        fn = _function_of(template, arn)
        if fn is None:
            raise TemplateProblem(
                [*tpath, i, "Arn"], "must be the ARN of a function of this template", arn
            )
        trigger = dict(schedule)
        if isinstance(target, dict) and target.get("Input") is not None:
            text = target["Input"]
            try:
                trigger["input"] = json.loads(text) if isinstance(text, str) else text
            except ValueError:
                raise TemplateProblem([*tpath, i, "Input"], "must be a JSON text", text) from None
        out.append((fn, {"cron": trigger}))
    return out


def _function_of(template: Template, arn: object) -> str | None:
    if not isinstance(arn, str) or ":function:" not in arn:
        return None
    name = arn.split(":function:", 1)[1].split(":", 1)[0]
    for lid in template.of_type(*FUNCTION_TYPES):
        if template.refs.function_name(lid) == name:
            return lid
    return None


def _event_source_mapping(
    tpl: Template, lid: str, functions: dict[str, Any], unsupported: list[str]
) -> None:
    """A plain ``AWS::Lambda::EventSourceMapping`` from an SQS queue to a function."""
    path: list[str | int] = ["Resources", lid, "Properties"]
    props = tpl.props(lid)
    target = tpl.resolver.string(props.get("FunctionName"), [*path, "FunctionName"])
    name = target.rsplit(":", 1)[-1] if target.startswith("arn:") else target
    fn_lid = next((f for f in functions if tpl.refs.function_name(f) == name), None)
    if fn_lid is None:
        raise TemplateProblem(
            [*path, "FunctionName"], "must name a function of the template", target
        )
    arn = tpl.resolver.string(props.get("EventSourceArn"), [*path, "EventSourceArn"])
    if ":sqs:" not in arn:
        message = f"event source mapping {lid}: not supported yet by this eventrun: {arn}"
        where = [*path, "EventSourceArn"]
        unsupported.append(unsupported_line(tpl.filename, tpl.data, where, message))
        return
    sam_props = {"Queue": props["EventSourceArn"]}
    for key in (
        "BatchSize",
        "MaximumBatchingWindowInSeconds",
        "FunctionResponseTypes",
        "FilterCriteria",
        "ScalingConfig",
        "Enabled",
    ):
        if key in props:
            sam_props[key] = props[key]
    trigger = MAPPERS["SQS"](EventContext(tpl, fn_lid, lid, sam_props, path))
    if trigger is not None:
        functions[fn_lid].setdefault("triggers", []).append(trigger)
