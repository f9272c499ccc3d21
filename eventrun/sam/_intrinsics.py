"""CloudFormation intrinsic functions, resolved to the local values they stand for.

:class:`Resolver` turns a template value into plain data: ``Ref`` of a parameter or a
pseudo parameter, ``Ref`` / ``Fn::GetAtt`` of a resource (through :class:`References`,
which knows what each resource is here), ``Fn::Sub``, ``Fn::Join``, ``Fn::Select``,
``Fn::Split``, ``Fn::If`` with ``Conditions``, ``Fn::Equals``/``And``/``Or``/``Not``,
``Fn::FindInMap``, ``Fn::Base64``, ``Fn::GetAZs``, ``Fn::ImportValue`` (from bindings),
``Fn::ToJsonString``, ``Fn::Length``. ``AWS::NoValue`` removes the property, as in
CloudFormation. Values are resolved only where the translation reads them, so a
property eventrun ignores (an IAM policy's ``!GetAtt Role.Arn``) is never an error.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import Path, TemplateProblem

__all__ = ["NO_VALUE", "Resolver"]


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()
"""``!Ref AWS::NoValue``: the property is removed."""

_SUB = re.compile(r"\$\{(!?)([^}]*)\}")

RefFn = Callable[[str, Path], object]
AttFn = Callable[[str, str, Path], object]


class Resolver:
    """Resolves intrinsics against parameters, pseudo parameters, conditions, mappings,
    imports and resources."""

    def __init__(
        self,
        *,
        parameters: Mapping[str, object],
        pseudo: Mapping[str, object],
        conditions: Mapping[str, object],
        mappings: Mapping[str, object],
        imports: Mapping[str, object],
        ref: RefFn,
        get_att: AttFn,
    ) -> None:
        self.parameters = parameters
        self.pseudo = pseudo
        self.condition_defs = conditions
        self.mappings = mappings
        self.imports = imports
        self._ref = ref
        self._get_att = get_att
        self._conditions: dict[str, bool] = {}
        self._evaluating: set[str] = set()

    def resolve(self, value: object, path: Path) -> Any:
        """``value`` with every intrinsic replaced (``NO_VALUE`` for ``AWS::NoValue``)."""
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, arg),) = value.items()
                if key == "Ref" or key.startswith("Fn::"):
                    return self._function(key, arg, [*path, key])
                if key == "Condition" and isinstance(arg, str):
                    return self.condition(arg, [*path, key])
            out = {}
            for k, v in value.items():
                item = self.resolve(v, [*path, k])
                if item is not NO_VALUE:
                    out[k] = item
            return out
        if isinstance(value, list):
            items = [self.resolve(v, [*path, i]) for i, v in enumerate(value)]
            return [v for v in items if v is not NO_VALUE]
        return value

    def string(self, value: object, path: Path) -> str:
        """A resolved scalar as text (numbers and booleans as CloudFormation writes them)."""
        resolved = self.resolve(value, path)
        if isinstance(resolved, bool):
            return "true" if resolved else "false"
        if isinstance(resolved, int | float | str):
            return str(resolved)
        raise TemplateProblem(path, "must be a string", resolved)

    def condition(self, name: str, path: Path) -> bool:
        """The value of ``Conditions[name]``."""
        if name in self._conditions:
            return self._conditions[name]
        if name not in self.condition_defs:
            known = ", ".join(self.condition_defs) or "none defined"
            raise TemplateProblem(path, f"must name a condition in Conditions ({known})", name)
        if name in self._evaluating:
            raise TemplateProblem(["Conditions", name], "refers to itself (a cycle)")
        self._evaluating.add(name)
        try:
            result = self.resolve(self.condition_defs[name], ["Conditions", name])
        finally:
            self._evaluating.discard(name)
        if not isinstance(result, bool):
            raise TemplateProblem(
                ["Conditions", name], "must be Fn::Equals, Fn::And, Fn::Or, Fn::Not or a Condition"
            )
        self._conditions[name] = result
        return result

    def _function(self, name: str, arg: Any, path: Path) -> Any:
        handler = _FUNCTIONS.get(name)
        if handler is None:
            raise TemplateProblem(path, f"{name} is not supported by eventrun's template reader")
        return handler(self, arg, path)

    def ref(self, name: object, path: Path) -> Any:
        if not isinstance(name, str):
            raise TemplateProblem(path, "must be the name of a parameter or resource", name)
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name.startswith("AWS::"):
            raise TemplateProblem(path, "is not a pseudo parameter eventrun knows", name)
        if name in self.parameters:
            return self.parameters[name]
        return self._ref(name, path)

    def get_att(self, arg: object, path: Path) -> Any:
        arg = self.resolve(arg, path)
        if isinstance(arg, str):
            arg = arg.split(".", 1)
        if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, str) for a in arg)):
            raise TemplateProblem(
                path, 'must be "LogicalId.Attribute" or [LogicalId, Attribute]', arg
            )
        return self._get_att(arg[0], arg[1], path)

    def sub(self, arg: Any, path: Path) -> str:
        variables: Mapping[str, object] = {}
        if isinstance(arg, list):
            if len(arg) != 2 or not isinstance(arg[1], dict):
                raise TemplateProblem(path, "must be a string or [string, {Name: value}]", arg)
            arg, variables = arg[0], arg[1]
        if not isinstance(arg, str):
            raise TemplateProblem(path, "must be a string", arg)

        def one(match: re.Match[str]) -> str:
            literal, name = match.groups()
            if literal:
                return "${" + name + "}"
            name = name.strip()
            if name in variables:
                return self.string(variables[name], [*path, 1, name])
            if "." in name and not name.startswith("AWS::"):
                lid, attr = name.split(".", 1)
                return _text(self._get_att(lid, attr, path), path)
            return _text(self.ref(name, path), path)

        return _SUB.sub(one, arg)


def _text(value: object, path: Path) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateProblem(path, "must resolve to a string here", value)


def _list(resolver: Resolver, arg: object, path: Path, size: int | None = None) -> list[Any]:
    value = resolver.resolve(arg, path)
    if not isinstance(value, list) or (size is not None and len(value) != size):
        what = f"a list of {size}" if size else "a list"
        raise TemplateProblem(path, f"must be {what}", value)
    return value


def _join(r: Resolver, arg: object, path: Path) -> str:
    delim, items = _list(r, arg, path, 2)
    if not isinstance(items, list):
        raise TemplateProblem(path, "must be [delimiter, [values]]", arg)
    return str(delim).join(_text(v, path) for v in items)


def _select(r: Resolver, arg: object, path: Path) -> Any:
    index, items = _list(r, arg, path, 2)
    try:
        return items[int(index)]
    except (ValueError, TypeError, IndexError):
        raise TemplateProblem(
            path, "must be [index, [values]] with the index in range", arg
        ) from None


def _split(r: Resolver, arg: object, path: Path) -> list[str]:
    delim, text = _list(r, arg, path, 2)
    return _text(text, path).split(str(delim))


def _if(r: Resolver, arg: object, path: Path) -> Any:
    if not isinstance(arg, list) or len(arg) != 3 or not isinstance(arg[0], str):
        raise TemplateProblem(path, "must be [ConditionName, value if true, value if false]", arg)
    chosen = 1 if r.condition(arg[0], [*path, 0]) else 2
    return r.resolve(arg[chosen], [*path, chosen])


def _equals(r: Resolver, arg: object, path: Path) -> bool:
    a, b = _list(r, arg, path, 2)
    return bool(_text(a, path) == _text(b, path)) if not isinstance(a, list) else a == b


def _bools(r: Resolver, arg: object, path: Path) -> list[bool]:
    values = _list(r, arg, path)
    if not all(isinstance(v, bool) for v in values):
        raise TemplateProblem(path, "must be a list of conditions", values)
    return values


def _find_in_map(r: Resolver, arg: object, path: Path) -> Any:
    values = _list(r, arg, path)
    default = None
    if len(values) == 4 and isinstance(values[3], dict) and "DefaultValue" in values[3]:
        default, values = values[3]["DefaultValue"], values[:3]
    if len(values) != 3:
        raise TemplateProblem(path, "must be [MapName, TopLevelKey, SecondLevelKey]", values)
    node: Any = r.mappings
    for key in values:
        if not isinstance(node, dict) or _text(key, path) not in node:
            if default is not None:
                return default
            raise TemplateProblem(path, "must name an entry of Mappings", values)
        node = node[_text(key, path)]
    return r.resolve(node, path)


def _import_value(r: Resolver, arg: object, path: Path) -> Any:
    name = r.string(arg, path)
    if name not in r.imports:
        raise TemplateProblem(
            path,
            "cannot be resolved off AWS: give its value in eventrun.yaml "
            f'(bindings: {{"{name}": {{value: ...}}}}) and pass it with -c',
            name,
        )
    return r.imports[name]


def _get_azs(r: Resolver, arg: object, path: Path) -> list[str]:
    region = r.string(arg, path) or str(r.pseudo["AWS::Region"])
    return [f"{region}{z}" for z in "abc"]


_FUNCTIONS: dict[str, Callable[[Resolver, Any, Path], Any]] = {
    "Ref": lambda r, a, p: r.ref(r.resolve(a, p), p),
    "Fn::GetAtt": lambda r, a, p: r.get_att(a, p),
    "Fn::Sub": lambda r, a, p: r.sub(a, p),
    "Fn::Join": _join,
    "Fn::Select": _select,
    "Fn::Split": _split,
    "Fn::If": _if,
    "Fn::Equals": _equals,
    "Fn::And": lambda r, a, p: all(_bools(r, a, p)),
    "Fn::Or": lambda r, a, p: any(_bools(r, a, p)),
    "Fn::Not": lambda r, a, p: not _bools(r, a, p)[0],
    "Fn::FindInMap": _find_in_map,
    "Fn::Base64": lambda r, a, p: base64.b64encode(r.string(a, p).encode()).decode(),
    "Fn::GetAZs": _get_azs,
    "Fn::ImportValue": _import_value,
    "Fn::ToJsonString": lambda r, a, p: json.dumps(r.resolve(a, p), separators=(",", ":")),
    "Fn::Length": lambda r, a, p: len(_list(r, a, p)),
}
