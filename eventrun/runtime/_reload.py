"""Reloading a running daemon: new workers for changed functions, sources untouched.

``eventrun run --reload`` watches the config file and the handlers' code (``.py``,
``.js``/``.mjs``/``.cjs`` and ``bootstrap`` files under the config's folder); ``SIGHUP``
asks for the same reload (systemd's ``ExecReload``). A reload:

1. validates the new config and imports every handler in a fresh interpreter
   (``eventrun check``): a bad config or an import error is logged (``reload.failed``)
   and the running version keeps serving;
2. starts new runners for the functions whose config changed (all of them when code
   changed) and routes new invocations to them;
3. retires the old runners once their in-flight invocations finished.

Sources, their connections and positions, the dispatchers and the async queues keep
running. Changes a reload cannot apply without a restart (triggers, connections, server,
store, functions added or removed; a function's ``concurrency``, async retry settings
and ``destinations``, which its dispatch lanes and async queue were built with) are
logged as ``reload.restart_required`` and otherwise ignored.

Every runner is hosted by a task of its own (:func:`host_runner`): a runner owns a task
group, which must be left by the task that entered it.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus

from eventrun.common import one_line
from eventrun.config import FunctionConfig, LoadedConfig, load_config
from eventrun.exceptions import EventrunError
from eventrun.workers import FunctionRunner, Zygote, create_runner

if TYPE_CHECKING:
    from eventrun.runtime._runtime import Runtime

__all__ = ["host_runner", "reload_runtime", "serve_reloads"]

log = structlog.get_logger("eventrun.reload")

_RESTART_SECTIONS = ("connections", "server", "store")
# what sizes the dispatch lanes and the async-invocation queue, fixed at start
_RESTART_FIELDS = (
    "triggers",
    "concurrency",
    "maximum_retry_attempts",
    "maximum_event_age",
    "retry_delay",
    "destinations",
)


async def host_runner(
    name: str,
    cfg: FunctionConfig,
    config_dir: Path,
    hidden_env: Collection[str],
    retire: anyio.Event,
    zygote: Zygote | None = None,
    *,
    task_status: TaskStatus[FunctionRunner] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a function's runner until ``retire`` is set, then let its in-flight
    invocations finish (at most the function's timeout plus a second) and close it.
    ``zygote``: the daemon's, which forks the workers of a ``runtime: process`` function."""
    async with create_runner(
        name, cfg, config_dir=config_dir, hidden_env=hidden_env, zygote=zygote
    ) as runner:
        task_status.started(runner)
        await retire.wait()
        with anyio.move_on_after(cfg.timeout + 1.0):
            # runners have no "idle" event: their busy count is polled every 50 ms
            while runner.statistics().get("busy", 0):  # noqa: ASYNC110
                await anyio.sleep(0.05)


def _restart_required(old: LoadedConfig, new: LoadedConfig) -> list[str]:
    """What differs that only a restart applies."""
    out = [s for s in _RESTART_SECTIONS if getattr(old.config, s) != getattr(new.config, s)]
    before, after = old.config.functions, new.config.functions
    out += [f"functions.{n} added" for n in sorted(after.keys() - before.keys())]
    out += [f"functions.{n} removed" for n in sorted(before.keys() - after.keys())]
    for name in sorted(before.keys() & after.keys()):
        for field in _RESTART_FIELDS:
            if getattr(before[name], field) != getattr(after[name], field):
                out.append(f"functions.{name}.{field}")
    return out


def _forget_inline_modules(config_dir: Path) -> None:
    """Drop handler modules imported in-process from ``config_dir`` (``runtime: inline``)
    so that the new runner imports the edited code."""
    root = config_dir.resolve()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(root):
            del sys.modules[name]


async def reload_runtime(runtime: Runtime, new: LoadedConfig, *, code_changed: bool) -> list[str]:
    """Apply ``new`` (already validated) to ``runtime``; return the functions reloaded."""
    old = runtime.loaded
    skipped = _restart_required(old, new)
    if skipped:
        log.warning("reload.restart_required", changes=skipped)
    changed = [
        name
        for name, cfg in new.config.functions.items()
        if name in runtime.functions and (code_changed or cfg != runtime.functions[name].config)
    ]
    if any(new.config.functions[n].runtime == "inline" for n in changed):
        _forget_inline_modules(new.dir)
    started: list[tuple[str, FunctionConfig, FunctionRunner, anyio.Event]] = []
    try:
        for name in changed:
            cfg = new.config.functions[name]
            retire = anyio.Event()
            runner = await runtime.start_runner(name, cfg, retire)
            started.append((name, cfg, runner, retire))
    except Exception as exc:
        for *_, retire in started:
            retire.set()
        log.error("reload.failed", error=one_line(repr(exc)), kept="the running version")
        raise
    for name, cfg, runner, retire in started:
        old_retire = runtime.swap_runner(name, cfg, runner, retire)
        old_retire.set()
    runtime.loaded = new if not skipped else old
    log.info("reload.done", functions=changed, code_changed=code_changed)
    return changed


async def check_config(path: Path) -> str | None:
    """Validate ``path`` and import its handlers in a fresh interpreter; the error
    lines, or None when it is valid."""
    result = await anyio.run_process(
        [sys.executable, "-m", "eventrun", "check", "-c", str(path)], check=False
    )
    if result.returncode == 0:
        return None
    return result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"


def drop_stale_bytecode(root: Path, *, limit: int = 20_000) -> int:
    """Delete the cached bytecode of ``.py`` files under ``root`` written less than 2 s
    after (or before) their source changed; returns how many.

    Python trusts a ``.pyc`` whose recorded source mtime (whole seconds) and size match:
    an edit saved within the second of the last import that keeps the file's size (``v1``
    -> ``v2``) would otherwise be imported as the old code by the new workers."""
    dropped = 0
    for count, source in enumerate(root.rglob("*.py")):
        if count >= limit:
            break
        if any(part.startswith(".") for part in source.relative_to(root).parts[:-1]):
            continue
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            if cached.stat().st_mtime - source.stat().st_mtime < 2.0:
                cached.unlink()
                dropped += 1
        except OSError:
            continue
    return dropped


async def _reload_once(runtime: Runtime, path: Path, *, code_changed: bool) -> None:
    log.info("reload.begin", config=str(path), code_changed=code_changed)
    if code_changed:
        await anyio.to_thread.run_sync(drop_stale_bytecode, path.parent)
    error = await check_config(path)
    if error is not None:
        log.error("reload.failed", error=one_line(error), kept="the running version")
        return
    try:
        new = load_config(path)
        await reload_runtime(runtime, new, code_changed=code_changed)
    except (EventrunError, OSError) as exc:
        log.error("reload.failed", error=one_line(str(exc)), kept="the running version")


CODE_SUFFIXES = frozenset({".py", ".js", ".mjs", ".cjs"})
"""Handler code the watcher reloads on: Python, and Node.js (``runtime: nodejs*``);
a custom runtime's ``bootstrap`` counts too. node_modules and caches do not."""


def _is_code(p: Path) -> bool:
    if "__pycache__" in p.parts or "node_modules" in p.parts:
        return False
    return p.suffix in CODE_SUFFIXES or p.name == "bootstrap"


def _relevant(config: Path) -> Any:
    """The watch filter: the config file (however its path is spelled) and handler code."""
    real = config.resolve()

    def accept(_change: Any, path: str) -> bool:
        p = Path(path)
        if _is_code(p):
            return True
        return p.name == real.name and p.parent.resolve() == real.parent

    return accept


async def serve_reloads(
    runtime: Runtime,
    *,
    watch: bool,
    reloadable: bool = True,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Reload on SIGHUP, and on file changes when ``watch``, until cancelled. Started
    (``reload.ready``) once SIGHUP is handled and the watcher is set up. Not
    ``reloadable`` (a config made from a SAM template): SIGHUP only logs that a restart
    is needed."""
    config = runtime.loaded.path
    lock = anyio.Lock()

    async def on_hup(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                if not reloadable:
                    log.warning("reload.unsupported", reason="a -t template run: restart it")
                    continue
                async with lock:
                    await _reload_once(runtime, config, code_changed=True)

    async with anyio.create_task_group() as tg:
        await tg.start(on_hup)
        if not watch:
            log.info("reload.ready", signal="SIGHUP", watching=[])
            task_status.started()
            return
        from watchfiles import awatch

        folder = config.parent
        ready = False
        # yield_on_timeout: the first (empty) yield tells that the watcher is running
        async for changes in awatch(
            folder,
            watch_filter=_relevant(config),
            debounce=300,
            step=50,
            rust_timeout=500,
            yield_on_timeout=True,
        ):
            if not ready:
                ready = True
                log.info("reload.ready", signal="SIGHUP", watching=[str(folder)])
                task_status.started()
            if not changes:
                continue
            code = any(_is_code(Path(p)) for _, p in changes)
            async with lock:
                await _reload_once(runtime, config, code_changed=code)
