"""Where records go and which ones are let in: filter criteria and on_success routing.

``filter_criteria`` follows Lambda's ``FilterCriteria`` (patterns are JSON object
strings, at most 10). A trigger's ``on_success`` is a destination, a list of them, or
a :class:`RouteRule` picking a destination by a field of the handler's result::

    on_success: {route: {field: type, order: "kafka:main/orders", refund: "local:refunds"},
                 default: "local:other"}
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ._types import ConfigModel, Destination, parse_destination, problem

__all__ = ["FilterCriteria", "FilterPattern", "OnSuccess", "RouteRule"]

JSONObject = dict[str, Any]


class FilterPattern(ConfigModel):
    """One filter: an EventBridge-style pattern, written as a JSON object string."""

    pattern: str = Field(
        max_length=4096,
        description='JSON object string, e.g. \'{"body": {"kind": ["order"]}}\' (<= 4096 chars).',
    )

    @field_validator("pattern")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise problem(f"must be a JSON object string ({exc.msg} at char {exc.pos})") from None
        if not isinstance(parsed, dict):
            raise problem("must be a JSON object string, not a JSON " + type(parsed).__name__)
        return value

    @property
    def parsed(self) -> JSONObject:
        """The pattern as a dict."""
        result: JSONObject = json.loads(self.pattern)
        return result


class FilterCriteria(ConfigModel):
    """Lambda ``FilterCriteria``: a record passes when any pattern matches."""

    filters: list[FilterPattern] = Field(
        min_length=1, max_length=10, description="1 to 10 filters, OR-ed."
    )

    @property
    def patterns(self) -> list[JSONObject]:
        """Every filter's pattern, parsed."""
        return [f.parsed for f in self.filters]


class RouteRule(ConfigModel):
    """Pick a destination by the value of one field of each result.

    YAML shape: ``{route: {field: NAME, VALUE: DEST, ...}, default: DEST}``; results
    whose field matches no ``VALUE`` go to ``default`` (``local:unrouted`` when it is null:
    an output is never dropped).
    """

    field: str = Field(description="Top-level key of the handler's result to route on.")
    routes: dict[str, Destination] = Field(description="Field value -> destination.")
    default: Destination | None = Field(None, description="Destination for other values.")

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: object) -> object:
        if not isinstance(data, dict) or "route" not in data:
            return data
        for key in data:
            if key not in ("route", "default"):
                raise problem("unknown key (expected route, default)", at=str(key), got=key)
        route = data["route"]
        if not isinstance(route, dict):
            raise problem("must be a mapping {field: NAME, VALUE: DESTINATION, ...}", at="route")
        field = route.get("field")
        if not isinstance(field, str) or not field:
            raise problem("required: the result field to route on", at="route.field", got=field)
        routes = {k: v for k, v in route.items() if k != "field"}
        if not routes:
            raise problem("must map at least one VALUE to a destination", at="route", got=route)
        for value, dest in routes.items():
            _check_dest(dest, f"route.{value}")
        if data.get("default") is not None:
            _check_dest(data["default"], "default")
        return {"field": field, "routes": {str(k): v for k, v in routes.items()}, **_default(data)}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "object",
            "title": "RouteRule",
            "description": "Route each result by one field: {route: {field: NAME, VALUE: "
            "DESTINATION, ...}, default: DESTINATION}.",
            "properties": {
                "route": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}},
                    "required": ["field"],
                    "additionalProperties": {"type": "string"},
                },
                "default": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["route"],
            "additionalProperties": False,
        }

    def destinations(self) -> list[str]:
        """Every destination this rule can send to."""
        return [*self.routes.values(), *([self.default] if self.default else [])]


def _default(data: dict[str, object]) -> dict[str, object]:
    return {"default": data["default"]} if data.get("default") is not None else {}


def _check_dest(value: object, at: str) -> None:
    if not isinstance(value, str):
        raise problem("must be a destination string", at=at, got=value)
    try:
        parse_destination(value)
    except ValueError as exc:
        raise problem(str(exc), at=at, got=value) from None


def _on_success_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "<str>"
    if isinstance(value, list):
        return "<list>"
    if isinstance(value, dict | RouteRule):
        return "<rule>"
    return None


OnSuccess = Annotated[
    Annotated[Destination, Tag("<str>")]
    | Annotated[list[Destination], Tag("<list>")]
    | Annotated[RouteRule, Tag("<rule>")],
    Discriminator(
        _on_success_kind,
        custom_error_type="er_union",
        custom_error_message="must be a destination, a list of destinations, or "
        "{route: {field: NAME, VALUE: DESTINATION}, default: DESTINATION}",
    ),
]
"""A trigger's ``on_success``: one destination, several (all get every result), or a rule."""
