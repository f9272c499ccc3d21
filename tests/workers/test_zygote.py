"""eventrun.workers._zygote / _zygote_host: one zygote forks every function's workers.

Each test opens the daemon's zygote as the runtime does (:func:`open_zygote`) and runs
pools on it; the functions' code is written to their own task roots under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog.testing

from eventrun.workers import ProcessRunner, Zygote, function_environment, open_zygote
from eventrun.workers._zygote_host import zygote_environment

from .conftest import APPS, Settings, event

# The module of A (and of B: the same module name, in another task root) records what
# its worker sees; A also changes what it can of the state every worker starts from.
APP = """
import json, os, sys

MARK = {mark!r}
CALLS = 0
IMPORTED_WITH = sorted(m for m in sys.modules if m.startswith(("a_lib", "app")))


def handler(event, context):
    global CALLS
    CALLS += 1
    if event.get("pollute"):
        json.POLLUTED_BY = MARK
        os.environ["SET_AT_RUNTIME_BY"] = MARK
        sys.path.append("/runtime-entry-of-" + MARK)
        import a_lib  # from A's PYTHONPATH entry
    return {{
        "mark": MARK,
        "calls": CALLS,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "path": sys.path,
        "modules": sorted(m for m in sys.modules if m.startswith(("a_lib", "app"))),
        "polluted": getattr(json, "POLLUTED_BY", None),
        "imported_with": IMPORTED_WITH,
        "hash": hash("zygote"),
    }}


def with_eventrun(event, context):
    heavy = ("structlog", "anyio", "pydantic", "eventrun.workers._pool")
    before = sorted(m for m in sys.modules if m.startswith(heavy))
    import eventrun
    import eventrun.workers

    return {{
        "before": before,
        "version": eventrun.__version__,
        "has_create_runner": hasattr(eventrun.workers, "create_runner"),
    }}
"""


def _function(root: Path, mark: str) -> Path:
    root.mkdir()
    (root / "app.py").write_text(APP.format(mark=mark))
    return root


def _envs(*settings: tuple[str, Settings, Path]) -> list[dict[str, str]]:
    return [function_environment(n, s, r.resolve(), "us-east-1") for n, s, r in settings]


@asynccontextmanager
async def _pools(
    zygote: Zygote, *functions: tuple[str, Settings, Path]
) -> AsyncIterator[list[ProcessRunner]]:
    async with AsyncExitStack() as stack:
        runners = [
            await stack.enter_async_context(
                ProcessRunner(name, settings, config_dir=root, zygote=zygote)
            )
            for name, settings, root in functions
        ]
        yield runners


async def _call(runner: ProcessRunner, payload: Any) -> dict[str, Any]:
    result = await runner.invoke(event(payload))
    assert result.ok, result.logs
    out: dict[str, Any] = json.loads(result.payload)
    return out


async def test_one_functions_environment_path_and_state_never_reach_anothers_worker(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "a-lib"
    lib.mkdir()
    (lib / "a_lib.py").write_text("VALUE = 'a'\n")
    a_root, b_root = _function(tmp_path / "a", "a"), _function(tmp_path / "b", "b")
    a = (
        "fn-a",
        Settings(handler="app.handler", environment={"A_ONLY": "a-secret", "PYTHONPATH": str(lib)}),
        a_root,
    )
    b = ("fn-b", Settings(handler="app.handler", environment={"B_ONLY": "b"}), b_root)
    async with open_zygote(_envs(a, b)) as zygote, _pools(zygote, a, b) as (fa, fb):
        seen_a = await _call(fa, {"pollute": True})
        seen_b = await _call(fb, {})  # a new worker, forked after A's changed its state
        again_a = await _call(fa, {})  # A's warm worker keeps its own state
        zygote_pid = zygote.pid
    # both forked from the one zygote
    assert seen_a["ppid"] == seen_b["ppid"] == zygote_pid
    assert seen_a["pid"] != seen_b["pid"]
    # A's worker is A's: its variables, directory, PYTHONPATH entry, its app module
    assert seen_a["env"]["A_ONLY"] == "a-secret"
    assert seen_a["cwd"] == str(a_root.resolve())
    assert seen_a["path"][:2] == [str(a_root.resolve()), str(lib.resolve())]
    assert seen_a["mark"] == "a"
    assert "a_lib" in seen_a["modules"]
    assert again_a["calls"] == 2
    assert again_a["polluted"] == "a"
    # ... and nothing of it reaches B's: not the variable (set in config or at run time),
    # not the sys.path entries, not the module state of A's app nor of a shared module
    assert seen_b["mark"] == "b"
    assert seen_b["calls"] == 1
    assert seen_b["cwd"] == str(b_root.resolve())
    assert "A_ONLY" not in seen_b["env"]
    assert "SET_AT_RUNTIME_BY" not in seen_b["env"]
    assert seen_b["env"]["B_ONLY"] == "b"
    assert seen_b["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "fn-b"
    assert seen_b["env"]["LAMBDA_TASK_ROOT"] == str(b_root.resolve())
    assert seen_b["path"][0] == str(b_root.resolve())
    assert not [
        p
        for p in seen_b["path"]
        if "a-lib" in p or "runtime-entry" in p or p == str(a_root.resolve())
    ]
    assert seen_b["polluted"] is None
    assert seen_b["modules"] == ["app"]
    assert seen_b["imported_with"] == ["app"]


async def test_a_module_that_fails_to_import_gives_the_init_error_and_harms_no_other(
    tmp_path: Path,
) -> None:
    broken = ("broken", Settings(handler="broken.handler"), APPS)
    fine = ("fine", Settings(handler="basic.handler"), APPS)
    async with open_zygote(_envs(broken, fine)) as zygote:
        pid = zygote.pid
        async with _pools(zygote, broken, fine) as (fb, ff):
            failed = [await fb.invoke(event({})) for _ in range(2)]
            ok = await _call(ff, {"n": 1})
        assert zygote.pid == pid
        assert zygote.restarts == 0
    # what a fresh interpreter (no fork server) reports for the same module
    async with ProcessRunner("broken", broken[1], config_dir=APPS, fork_server=False) as fresh:
        expected = await fresh.invoke(event({}))
    for result in failed:
        assert not result.ok
        assert result.error_type == expected.error_type == "Runtime.ImportModuleError"
        assert json.loads(result.payload) == json.loads(expected.payload)
        assert "No module named 'module_that_does_not_exist'" in result.logs
    assert ok["event"] == {"n": 1}


async def test_a_killed_zygote_is_logged_and_restarted_and_forks_again(tmp_path: Path) -> None:
    fn = ("fn", Settings(handler="basic.handler", max_requests=1), APPS)
    with structlog.testing.capture_logs() as logs:
        async with open_zygote(_envs(fn)) as zygote, _pools(zygote, fn) as (runner,):
            first = await _call(runner, {"n": 1})
            old = zygote.pid
            assert old is not None
            os.kill(old, signal.SIGKILL)
            with anyio.fail_after(10):
                while zygote.pid in (None, old):
                    await zygote.wait_change()
            new = zygote.pid
            second = await _call(runner, {"n": 2})
            assert _parent(second["pid"]) == new
    assert first["pid"] != second["pid"]
    assert new != old
    assert zygote.restarts == 1
    (died,) = [e for e in logs if e["event"] == "zygote.died"]
    assert died["returncode"] == -signal.SIGKILL
    assert died["log_level"] == "warning"
    (restarted,) = [e for e in logs if e["event"] == "zygote.restarted"]
    assert restarted["pid"] == new
    assert restarted["restarts"] == 1
    assert zygote.pid is None  # closed with the context: no process left behind
    with pytest.raises(ProcessLookupError):
        os.kill(new, 0)


async def test_different_interpreter_start_up_variables_get_a_zygote_of_their_own(
    tmp_path: Path,
) -> None:
    root = _function(tmp_path / "fn", "x")
    shared = ("shared", Settings(handler="app.handler"), root)
    seeded = (
        "seeded",
        Settings(handler="app.handler", environment={"PYTHONHASHSEED": "123"}),
        root,
    )
    with structlog.testing.capture_logs() as logs:
        async with open_zygote(_envs(shared)) as zygote, _pools(zygote, shared, seeded) as pools:
            on_shared, on_own = [await _call(runner, {}) for runner in pools]
            zygote_pid = zygote.pid
    assert on_shared["ppid"] == zygote_pid
    assert on_own["ppid"] != zygote_pid  # its own zygote, started with PYTHONHASHSEED
    assert on_own["env"]["PYTHONHASHSEED"] == "123"
    assert on_own["hash"] == _hash_with_seed("123")
    (own,) = [e for e in logs if e["event"] == "zygote.own"]
    assert own["function"] == "seeded"
    assert own["variables"] == ["PYTHONHASHSEED"]


def _hash_with_seed(seed: str) -> int:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", "print(hash('zygote'))"],
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


async def test_workers_start_without_the_daemon_side_but_can_import_eventrun(
    tmp_path: Path,
) -> None:
    """The zygote never ran eventrun's nor eventrun.workers' ``__init__`` (structlog,
    anyio, the config models: the daemon's side), so its workers do not carry them; a
    handler that imports ``eventrun`` still gets the real package."""
    root = _function(tmp_path / "fn", "x")
    fn = ("fn", Settings(handler="app.with_eventrun"), root)
    async with open_zygote(_envs(fn)) as zygote, _pools(zygote, fn) as (runner,):
        seen = await _call(runner, {})
    assert seen["before"] == []
    assert seen["version"]
    assert seen["has_create_runner"]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(") ", 1)[1].split()[1])


async def test_a_zygote_that_cannot_start_is_given_up_and_workers_are_spawned_instead(
    tmp_path: Path,
) -> None:
    root = _function(tmp_path / "fn", "x")
    fn = ("fn", Settings(handler="app.handler"), root)
    zygote = Zygote(zygote_environment(_envs(fn)), tmp_path / "no-such-directory")
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(zygote.run)
            async with _pools(zygote, fn) as (runner,):
                first, second = await _call(runner, {}), await _call(runner, {"n": 2})
            await zygote.aclose()
    assert first["ppid"] == os.getpid()  # a fresh interpreter, started by the pool
    assert second["pid"] == first["pid"]  # and kept warm as any worker
    (failed,) = [e for e in logs if e["event"] == "zygote.start_failed"]
    assert "FileNotFoundError" in failed["error"]
    assert failed["cwd"] == str(tmp_path / "no-such-directory")
    assert not [e for e in logs if e["event"] in ("zygote.started", "zygote.restarted")]
