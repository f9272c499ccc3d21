"""Template problems: where (file, property path, line) and what is expected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventrun.common import one_line

from ._yaml import Node

__all__ = [
    "Path",
    "TemplateProblem",
    "as_list",
    "as_mapping",
    "as_number",
    "format_path",
    "locate",
    "problem_line",
    "unsupported_line",
]

Path = Sequence[str | int]


class TemplateProblem(Exception):
    """One problem at a property path of the template (turned into a ConfigError line
    by the translator, with the file name and the line)."""

    def __init__(self, path: Path, message: str, got: object = None, *, has_got: bool = False):
        super().__init__(message)
        self.path = list(path)
        self.message = message
        self.got = got
        self.has_got = has_got or got is not None
        self.template: object = None
        """The parsed template, when the problem arose before the translator had it."""


def format_path(path: Path) -> str:
    """``Resources.Fn.Properties.Events[0]`` style, as CloudFormation tools print it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def locate(template: object, path: Path) -> int | None:
    """The line of the deepest key along ``path`` that the loader recorded."""
    line: int | None = None
    node = template
    for part in path:
        if isinstance(node, Node) and isinstance(part, str):
            line = node.lines.get(part, line)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            line = node.line if isinstance(node, Node) and node.line else line
        else:
            break
    return line


def render(value: object) -> str:
    import json

    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return one_line(text if len(text) <= 120 else text[:117] + "...")


def problem_line(filename: str, template: object, exc: TemplateProblem) -> str:
    """``template.yaml: Resources.Fn.Properties.Timeout (line 12): must be ..., got 0``."""
    line = locate(template, exc.path)
    where = format_path(exc.path)
    at = f" (line {line})" if line else ""
    got = f", got {render(exc.got)}" if exc.has_got else ""
    head = f"{filename}: {where}{at}: " if where else f"{filename}: "
    return one_line(head + exc.message + got)


def unsupported_line(filename: str, template: object, path: Path, message: str) -> str:
    """``template.yaml: Resources.Fn.Properties.Events.E.Type (line 9): event Fn.E: ...``."""
    line = locate(template, path)
    at = f" (line {line})" if line else ""
    return one_line(f"{filename}: {format_path(path)}{at}: {message}")


def as_mapping(value: object, path: Path) -> dict[str, Any]:
    """``value`` when it is a mapping (``{}`` for None), else a problem at ``path``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TemplateProblem(path, "must be a mapping", value)
    return value


def as_list(value: object, path: Path) -> list[Any]:
    """``value`` when it is a list (``[]`` for None), else a problem at ``path``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TemplateProblem(path, "must be a list", value)
    return value


def as_number(value: object, path: Path, kind: type[int] | type[float] = int) -> Any:
    """``value`` as an int (or float), else a problem at ``path``."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise TemplateProblem(path, "must be a number", value)
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise TemplateProblem(path, f"must be {what}", value) from None
