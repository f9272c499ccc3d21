"""Reading a CloudFormation template: YAML with the short-form tags, or JSON.

The loader is a private :class:`yaml.SafeLoader` subclass (PyYAML's global loaders are
left alone). Short forms become the long form CloudFormation itself uses: ``!Ref X`` ->
``{"Ref": "X"}``, ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``, ``!Sub``/``!Join``
... -> ``{"Fn::Sub": ...}``, ``!Condition C`` -> ``{"Condition": "C"}``. Mappings are
:class:`Node` dicts that remember the line of each key, so errors can name it.
Duplicate keys are errors, as CloudFormation refuses them.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import yaml

__all__ = ["Node", "line_of", "parse_template"]

_FUNCTIONS = (
    "And",
    "Base64",
    "Cidr",
    "Equals",
    "FindInMap",
    "GetAZs",
    "If",
    "ImportValue",
    "Join",
    "Not",
    "Or",
    "Select",
    "Split",
    "Sub",
    "Transform",
    "ToJsonString",
    "Length",
)


class Node(dict[str, Any]):
    """A template mapping that knows the (1-based) line of each of its keys."""

    __slots__ = ("line", "lines")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line: int | None = None
        self.lines: dict[str, int] = {}


def line_of(mapping: object, key: str | None = None) -> int | None:
    """The line of ``key`` in ``mapping`` (or of the mapping itself), when known."""
    if not isinstance(mapping, Node):
        return None
    return mapping.lines.get(key, mapping.line) if key is not None else mapping.line


class _Loader(yaml.SafeLoader):
    """SafeLoader with CloudFormation's tags, line-aware mappings, no duplicate keys."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> Node:
    loader.flatten_mapping(node)
    out = Node()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be strings", key_node.start_mark
            )
        key = str(key)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _value(loader: _Loader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.MappingNode)
    return _mapping(loader, node)


def _tagged(name: str) -> Any:
    def construct(loader: _Loader, node: yaml.Node) -> Node:
        value = _value(loader, node)
        if name == "Fn::GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        out = Node({name: value})
        out.line = out.lines[name] = node.start_mark.line + 1
        return out

    return construct


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor("!Ref", _tagged("Ref"))
_Loader.add_constructor("!Condition", _tagged("Condition"))
_Loader.add_constructor("!GetAtt", _tagged("Fn::GetAtt"))
for _name in _FUNCTIONS:
    _Loader.add_constructor(f"!{_name}", _tagged(f"Fn::{_name}"))


def parse_template(text: str, filename: str) -> Node:
    """The template as nested :class:`Node` dicts and lists; a syntax error, or a
    document that is not a mapping, is one ``ValueError`` line naming the file."""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text, object_hook=Node)
        except ValueError as exc:
            raise ValueError(f"{filename}: invalid JSON: {exc}") from None
    else:
        try:
            data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
            what = exc.problem or exc.context or "syntax error"
            raise ValueError(f"{filename}: {where}invalid YAML: {what}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{filename}: invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{filename}: a template must be a mapping with Resources")
    return data if isinstance(data, Node) else Node(data)
