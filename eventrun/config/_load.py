"""Reading ``eventrun.yaml``: file, YAML, then ``${VAR}`` interpolation.

YAML is parsed with the safe loader, rejecting duplicate keys (PyYAML would silently
keep the last one). Interpolation runs on the parsed tree, in string scalars only, so
a variable's value can never change the document's structure:

* ``${VAR}`` — the variable's value; unset is an error naming the key and the variable;
* ``${VAR:-default}`` — the default when the variable is unset or empty;
* ``$$`` — a literal ``$``. Any other ``$`` is left as it is (``starting_position: $``).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ._errors import Loc, format_problem
from ._types import render_value

__all__ = ["interpolate", "parse_yaml", "read_text"]

_MAX_DEPTH = 64
_MAX_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` entries may be overridden; that is their point
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {render_value(key)}", key_node.start_mark
                )
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_text(path: Path, filename: str) -> str:
    """The file's text; a missing or unreadable file is one problem line (ValueError)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{filename}: file not found ({path})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{filename}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{filename}: cannot read ({exc.strerror or exc})") from None


def parse_yaml(text: str, filename: str) -> object:
    """The YAML document (``{}`` for an empty file); a syntax error is one ValueError line."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        what = exc.problem or exc.context or "syntax error"
        raise ValueError(f"{filename}: {where}invalid YAML: {what}") from None
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        what = f"unacceptable character #x{char:04x} at position {exc.position}: {exc.reason}"
        raise ValueError(f"{filename}: invalid YAML: {what}") from None
    except RecursionError:  # PyYAML's parser recurses once per nesting level
        raise ValueError(f"{filename}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:  # any other: still one line
        raise ValueError(f"{filename}: invalid YAML: {' '.join(str(exc).split())}") from None
    if _expanded_size(data, {}, _MAX_NODES) > _MAX_NODES:
        raise ValueError(
            f"{filename}: invalid YAML: more than {_MAX_NODES} values once aliases are "
            "expanded (an alias bomb?)"
        )
    return {} if data is None else data


def _expanded_size(value: object, memo: dict[int, int], limit: int) -> int:
    """How many values ``value`` holds with every alias expanded, counted once per shared
    node (memo), stopping early past ``limit``; a cycle counts as over the limit."""
    if not isinstance(value, dict | list):
        return 1
    key = id(value)
    if key in memo:
        return memo[key]
    memo[key] = limit + 1  # in progress: meeting it again is a cycle
    total = 1
    children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    for child in children:
        total += _expanded_size(child, memo, limit)
        if total > limit:
            break
    memo[key] = total
    return total


_REF = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|(\{))")


def interpolate(
    data: object, environ: Mapping[str, str], filename: str
) -> tuple[object, list[str]]:
    """Return ``data`` with ``${...}`` references replaced, and the problem lines."""
    walker = _Interpolator(environ, filename)
    return walker.walk(data, []), walker.problems


class _Interpolator:
    def __init__(self, environ: Mapping[str, str], filename: str) -> None:
        self.environ = environ
        self.filename = filename
        self.problems: list[str] = []

    def walk(self, value: object, loc: list[str | int]) -> object:
        if len(loc) > _MAX_DEPTH:
            self.problems.append(format_problem(self.filename, loc, "is nested too deeply", None))
            return None
        if isinstance(value, str):
            return _REF.sub(lambda m: self._one(m, loc), value) if "$" in value else value
        if isinstance(value, dict):
            return {k: self.walk(v, [*loc, str(k)]) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, [*loc, i]) for i, v in enumerate(value)]
        return value

    def _one(self, match: re.Match[str], loc: Loc) -> str:
        dollar, name, default, broken = match.groups()
        if dollar:
            return "$"
        if broken:
            self._problem(
                loc,
                "has a malformed ${...}: use ${VAR}, ${VAR:-default}, or $$ for a $",
                match.string,
            )
            return match.group(0)
        value = self.environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            self._problem(
                loc,
                f"environment variable {name} is not set (set it, or write ${{{name}:-default}})",
                match.string,
            )
            return ""
        return value

    def _problem(self, loc: Loc, message: str, text: str) -> None:
        self.problems.append(format_problem(self.filename, loc, message, render_value(text)))
