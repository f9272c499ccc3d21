"""Turn pydantic validation errors into one-line config problems.

Each line is ``FILE: key.path: what is expected, got VALUE``: the key path uses dots
and ``[i]`` exactly as the YAML nests, the expectation is a short sentence, and the
value is rendered YAML-ish (see :func:`render_value`). Pydantic's multi-line text
never reaches the user.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from eventrun.common import one_line

from ._types import render_value

__all__ = ["Loc", "format_path", "format_problem", "translate_errors"]

Loc = Sequence[str | int]

_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_unicode": "must be a string",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "literal_error": "must be one of {expected}",
    "missing": "is required",
}


_UNION_TAGS = frozenset({"<str>", "<list>", "<rule>"})
"""Discriminator tags of our unions; pydantic puts them in ``loc``, the YAML has no such key."""


_PLAIN_KEY = re.compile(r"[\w-]+")


def format_path(loc: Loc) -> str:
    """``("functions", "f", "triggers", 0, "kafka")`` -> ``functions.f.triggers[0].kafka``.

    Keys that are not plain words are quoted, control characters and line separators
    escaped: ``environment["A B"]``, ``["bad\\u2028key"]``.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{one_line(json.dumps(part, ensure_ascii=False))}]"
    return out


def format_problem(filename: str, loc: Loc, message: str, got: str | None) -> str:
    """One problem line; ``got`` is an already rendered value or None for none.

    The line is passed through :func:`one_line`: a key, file name or value holding a line
    separator never splits one problem into two lines.
    """
    path = format_path(loc)
    head = f"{filename}: {path}: " if path else f"{filename}: "
    return one_line(head + message + (f", got {got}" if got is not None else ""))


def _split_at(at: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in at.split(".")] if at else []


def translate_errors(
    errors: Sequence[ErrorDetails], filename: str, root: type[BaseModel]
) -> list[str]:
    """One line per pydantic error, in pydantic's order (which follows the file)."""
    lines: list[str] = []
    for err in errors:
        kind = err["type"]
        # The key an extra_forbidden names is the user's, even if it looks like a tag.
        keep = len(err["loc"]) - 1 if kind == "extra_forbidden" else len(err["loc"])
        loc: list[str | int] = [
            p for i, p in enumerate(err["loc"]) if i >= keep or p not in _UNION_TAGS
        ]
        ctx: dict[str, Any] = dict(err.get("ctx") or {})
        got: str | None = render_value(err["input"])
        if kind == "er_many":
            for sub_loc, message, sub_got in ctx["problems"]:
                lines.append(format_problem(filename, [*loc, *sub_loc], message, sub_got))
            continue
        if kind.startswith("er_"):
            loc += _split_at(ctx.get("at", ""))
            message = ctx.get("m", err["msg"])
            got = (ctx["got"] or None) if "got" in ctx else got
        elif kind == "extra_forbidden":
            message, got = _unknown_key(root, loc), None
        elif kind == "missing":
            message, got = _MESSAGES[kind], None
        elif kind == "too_short" and ctx.get("min_length") == 1:
            message = "must not be empty"
        elif kind in _MESSAGES:
            message = _MESSAGES[kind].format(**ctx)
        else:
            message = err["msg"][:1].lower() + err["msg"][1:]
        if len(loc) >= 2 and loc[-1] == "[key]":  # a mapping key of the wrong type
            loc, message = loc[:-2], f"keys {message.replace('must be a', 'must be')}s"
        lines.append(format_problem(filename, loc, message, got))
    return lines


def _unknown_key(root: type[BaseModel], loc: Loc) -> str:
    model = _model_at(root, loc[:-1])
    if model is None:
        return "unknown key"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return "unknown key (expected one of: " + ", ".join(allowed) + ")"


def _strip(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tp = models[0] if len(models) == 1 else (members[0] if len(members) == 1 else None)
        else:
            return tp


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class validating the mapping at ``loc``, walking the annotations."""
    tp: Any = root
    for part in loc:
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            return None
    tp = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None
