"""Resolve a handler string to a callable, as Lambda's Python runtime does.

Two spellings are accepted:

* ``pkg.module:attr`` (``attr`` may be dotted: ``module:Class.method``);
* Lambda's ``dir/file.attr`` / ``file.attr``: everything before the last dot is the
  module path relative to the task root, ``/`` standing for ``.``.

The config directory (Lambda's task root) goes first on ``sys.path``. Failures carry
the ``errorType`` awslambdaric would report (``Runtime.ImportModuleError``,
``Runtime.HandlerNotFound``, ``Runtime.MalformedHandlerName``,
``Runtime.UserCodeSyntaxError``) in :class:`HandlerLoadFailure`; :func:`load_handler`,
the public entry point, turns it into :class:`~eventrun.exceptions.HandlerImportError`.

Imported by worker processes: keep it light.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["HandlerLoadFailure", "load_handler", "parse_handler", "resolve_handler"]


class HandlerLoadFailure(Exception):
    """A handler could not be loaded; ``error_type`` is Lambda's ``Runtime.*`` name."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack = stack or []


def parse_handler(handler: str) -> tuple[str, str]:
    """``(module, attribute path)`` for either handler spelling."""
    if ":" in handler:
        module, _, attr = handler.partition(":")
    else:
        module, dot, attr = handler.rpartition(".")
        if not dot:
            raise HandlerLoadFailure(
                "Runtime.MalformedHandlerName",
                f"Bad handler '{handler}': not enough values to unpack (expected 2, got 1)",
            )
        module = module.replace("/", ".")
    module = module.strip(".")
    if not module or not attr or ":" in attr:
        raise HandlerLoadFailure(
            "Runtime.MalformedHandlerName",
            f"Bad handler '{handler}': expected 'package.module:function' or 'dir/file.function'",
        )
    return module, attr


def resolve_handler(handler: str, task_root: Path | str) -> Callable[..., Any]:
    """Import the handler's module with ``task_root`` first on sys.path and return it."""
    module_name, attr = parse_handler(handler)
    root = str(task_root)
    if not sys.path or sys.path[0] != root:
        sys.path.insert(0, root)
    _forget_foreign(module_name, root)
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise HandlerLoadFailure(
            "Runtime.UserCodeSyntaxError",
            f"Syntax error in module '{module_name}': {exc}",
            traceback.format_list(traceback.extract_tb(exc.__traceback__)),
        ) from exc
    except ImportError as exc:
        raise HandlerLoadFailure(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    except Exception as exc:
        raise HandlerLoadFailure(
            "Runtime.ImportModuleError",
            f"Unable to import module '{module_name}': {type(exc).__name__}: {exc}",
            traceback.format_list(traceback.extract_tb(exc.__traceback__)),
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerLoadFailure(
                "Runtime.HandlerNotFound", f"Handler '{attr}' missing on module '{module_name}'"
            ) from None
    if not callable(target):
        raise HandlerLoadFailure(
            "Runtime.HandlerNotFound",
            f"Handler '{attr}' on module '{module_name}' is not callable",
        )
    return target  # type: ignore[no-any-return]


def _forget_foreign(module_name: str, root: str) -> None:
    """Drop an already-imported module of the same name that lives outside ``root``.

    Worker processes import one app, but inline handlers and ``eventrun check`` import in
    a process that may already hold another app's ``app`` or ``handlers`` module; Python's
    module cache would hand that one back instead of this task root's.
    """
    top = module_name.split(".", 1)[0]
    cached = sys.modules.get(top)
    if cached is None:
        return
    locations = [getattr(cached, "__file__", None), *getattr(cached, "__path__", [])]
    prefix = os.path.join(root, "")
    if any(loc and os.path.abspath(loc).startswith(prefix) for loc in locations):
        return
    if not any(locations):  # a namespace or built-in module: leave it alone
        return
    installed = (os.path.join(sys.prefix, ""), os.path.join(sys.base_prefix, ""))
    if any(loc and os.path.abspath(loc).startswith(installed) for loc in locations):
        return  # an installed package (or eventrun itself) is the same for every app
    for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def load_handler(handler: str, config_dir: Path) -> Callable[..., Any]:
    """Import and resolve ``handler`` in this process (task root = ``config_dir``).

    Raises :class:`~eventrun.exceptions.HandlerImportError` naming the handler, the
    config directory, Lambda's error type and the cause.
    """
    from eventrun.exceptions import HandlerImportError

    try:
        return resolve_handler(handler, Path(config_dir).resolve())
    except HandlerLoadFailure as exc:
        raise HandlerImportError(
            f"handler {handler!r} (task root {config_dir}): {exc.error_type}: {exc.message}; "
            "check the module path and that the attribute exists"
        ) from exc
