"""What a handler in a worker process cannot reach (docs/security.md, "Workers").

Real worker processes, both launchers: the environment is built from nothing (the
function's own variables, Lambda's, the ``inherit_env`` allow-list of the daemon's; never
``EVENTRUN_*`` nor the token variable), the daemon and other functions' processes are
not readable through /proc, the address-space cap is hard, and a worker holds no
descriptor of the daemon's while its output is still captured per invocation.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from eventrun.config import DEFAULT_INHERIT_ENV
from eventrun.workers._api import function_environment

from .conftest import RunnerFactory, Settings, event

LAUNCHERS = pytest.mark.parametrize("fork_server", [True, False], ids=["forkserver", "spawn"])

SECRETS = {
    "EVENTRUN_TOKENS": "admin-token-1",
    "EVENTRUN_STORE_PASSWORD": "store-secret",
    "MY_API_TOKENS": "other-token-variable",
    "DAEMON_ONLY_SECRET": "not-allow-listed",
}
ALLOWED = {"LANG": "C.UTF-8", "LC_TIME": "C", "AWS_ACCESS_KEY_ID": "testing", "TZ": "UTC"}


@pytest.fixture
def daemon_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**SECRETS, **ALLOWED}.items():
        monkeypatch.setenv(key, value)


async def _invoke(runner: Any, payload: Any) -> Any:
    result = await runner.invoke(event(payload))
    assert result.ok, result.logs
    return json.loads(result.payload)


@LAUNCHERS
async def test_handler_sees_its_own_lambdas_and_allow_listed_variables_only(
    process_runner: RunnerFactory, daemon_env: None, fork_server: bool
) -> None:
    async with (
        process_runner(
            "fn-a",
            handler="isolation.environ",
            fork_server=fork_server,
            environment={"A_SECRET": "a-value"},
            hidden_env={"MY_API_TOKENS"},
        ) as a,
        process_runner(
            "fn-b",
            handler="isolation.environ",
            fork_server=fork_server,
            environment={"B_SECRET": "b-value"},
            hidden_env={"MY_API_TOKENS"},
        ) as b,
    ):
        env_a = await _invoke(a, {})
        env_b = await _invoke(b, {})
    for env, own, other in ((env_a, "A_SECRET", "B_SECRET"), (env_b, "B_SECRET", "A_SECRET")):
        assert own in env
        assert other not in env
        assert not [k for k in env if k.startswith("EVENTRUN_")]
        assert "MY_API_TOKENS" not in env
        assert "DAEMON_ONLY_SECRET" not in env
        assert not set(SECRETS.values()) & set(env.values())
        for key, value in ALLOWED.items():
            assert env[key] == value
        assert env["PATH"] == os.environ["PATH"]
        assert env["LAMBDA_TASK_ROOT"]
        assert env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert env_a["AWS_LAMBDA_FUNCTION_NAME"] == "fn-a"
    assert env_b["AWS_LAMBDA_FUNCTION_NAME"] == "fn-b"
    allowed = {k for k in os.environ if k in DEFAULT_INHERIT_ENV or k.startswith(("LC_", "AWS_"))}
    lambda_keys = {k for k in env_a if k.startswith(("AWS_LAMBDA_", "AWS_EXECUTION_", "AWS_"))}
    extra = set(env_a) - allowed - lambda_keys - {"A_SECRET", "LAMBDA_TASK_ROOT", "_HANDLER"}
    tooling = {"COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"}  # under make coverage
    assert extra <= {"PYTHONUNBUFFERED", "PYTHONPATH", *tooling}, extra


async def test_inherit_env_names_what_a_worker_gets_but_never_the_secrets(
    process_runner: RunnerFactory, daemon_env: None
) -> None:
    async with (
        process_runner(
            handler="isolation.environ", inherit_env=["*"], hidden_env={"MY_API_TOKENS"}
        ) as everything,
        process_runner(handler="isolation.environ", inherit_env=[]) as nothing,
    ):
        wide = await _invoke(everything, {})
        narrow = await _invoke(nothing, {})  # still starts: eventrun stays importable
    assert wide["DAEMON_ONLY_SECRET"] == "not-allow-listed"
    assert "MY_API_TOKENS" not in wide
    assert not [k for k in wide if k.startswith("EVENTRUN_")]
    assert not {"PATH", "LANG", "AWS_ACCESS_KEY_ID", "DAEMON_ONLY_SECRET"} & set(narrow)
    assert narrow["AWS_LAMBDA_FUNCTION_NAME"] == "fn"


def test_function_environment_layers() -> None:
    """Allow-listed daemon variables < PYTHONUNBUFFERED < the function's < Lambda's."""
    settings = Settings(
        handler="app.handler",
        environment={"TZ": "Europe/Paris", "AWS_REGION": "ignored", "OWN": "1"},
        inherit_env=("TZ", "LC_*", "SAFE"),
    )
    daemon = {
        "TZ": "UTC",
        "LC_ALL": "C",
        "LCX": "no",
        "SAFE": "yes",
        "lc_all": "case matters",
        "EVENTRUN_TOKENS": "t",
        "HIDDEN": "h",
    }
    env = function_environment(
        "f", settings, Path("/srv/app"), "eu-west-1", hidden={"HIDDEN", "SAFE"}, environ=daemon
    )
    assert env["TZ"] == "Europe/Paris"
    assert env["LC_ALL"] == "C"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["OWN"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert not {"LCX", "lc_all", "EVENTRUN_TOKENS", "HIDDEN", "SAFE"} & set(env)


@LAUNCHERS
async def test_handler_cannot_read_the_daemon_or_another_function(
    process_runner: RunnerFactory, daemon_env: None, fork_server: bool
) -> None:
    async with (
        process_runner(handler="isolation.read_files", fork_server=fork_server) as reader,
        process_runner("writer", handler="isolation.write_files", fork_server=fork_server) as w,
        process_runner(
            "fn-b",
            handler="isolation.pid",
            fork_server=fork_server,
            environment={"B_SECRET": "b-value"},
        ) as b,
    ):
        b_worker = await _invoke(b, {})
        b_parent = _parent_of(b_worker)
        daemon = os.getpid()
        paths = [
            f"/proc/{daemon}/environ",
            f"/proc/{daemon}/cmdline",  # world-readable, no secret: the control
            f"/proc/{b_worker}/environ",
            f"/proc/{b_parent}/environ",  # b's fork server (the daemon, spawned)
        ]
        seen = await _invoke(reader, {"paths": paths})
        written = await _invoke(w, {"paths": [f"/proc/{daemon}/fd/1", f"/proc/{daemon}/fd/2"]})
    assert seen[f"/proc/{daemon}/cmdline"] not in ("denied", "empty")
    for path in paths:
        if path.endswith("environ"):
            assert seen[path] in ("denied", "empty"), path
    text = json.dumps(seen)
    assert "admin-token-1" not in text
    assert "b-value" not in text
    assert set(written.values()) == {"denied"}, written


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(") ", 1)[1].split()[1])


async def test_a_process_running_a_pool_is_not_dumpable(process_runner: RunnerFactory) -> None:
    pr_get_dumpable = 3
    libc = ctypes.CDLL(None, use_errno=True)
    async with process_runner():
        assert libc.prctl(pr_get_dumpable, 0, 0, 0, 0) == 0


@LAUNCHERS
async def test_handler_cannot_raise_the_address_space_limit(
    process_runner: RunnerFactory, fork_server: bool
) -> None:
    async with process_runner(handler="isolation.rlimit", fork_server=fork_server) as runner:
        seen = await _invoke(runner, {})
    soft, hard = seen["before"]
    assert hard != resource.RLIM_INFINITY
    assert soft == hard
    assert seen["attempts"] == {"unlimited": "ValueError", "hard_plus_one": "ValueError"}
    assert seen["after"] == [soft, hard]
    caps = seen["caps"]
    assert (caps["CapEff"], caps["CapPrm"], caps["CapInh"], caps["CapAmb"]) == (0, 0, 0, 0)
    if os.geteuid() == 0:  # root workers also lose the bounding set and new privileges
        assert caps["CapBnd"] == 0
        assert caps["NoNewPrivs"] == 1


@LAUNCHERS
async def test_worker_holds_no_daemon_descriptor_and_output_is_still_captured(
    process_runner: RunnerFactory, fork_server: bool
) -> None:
    daemon_err = os.fstat(2)
    async with process_runner(handler="isolation.descriptors", fork_server=fork_server) as runner:
        result = await runner.invoke(event({}), request_id="fd-check")
        assert result.ok, result.logs
        seen = json.loads(result.payload)
        # the fork server's own stdout/stderr are not the daemon's either
        if fork_server and os.geteuid() == 0:  # reading another process's fds needs root
            for fd in (1, 2):
                template = os.stat(f"/proc/{seen['ppid']}/fd/{fd}")
                assert (template.st_dev, template.st_ino) != (daemon_err.st_dev, daemon_err.st_ino)
    fds = seen["fds"]
    assert fds.pop("0") == "/dev/null"
    assert fds.pop("1").startswith("/memfd:eventrun-fn")
    assert fds.pop("2").startswith("/memfd:eventrun-fn")
    assert fds.pop(next(k for k, v in fds.items() if v == f"/proc/{seen['pid']}/status"))
    assert [v.split(":")[0] for v in fds.values()] == ["socket"], fds  # the IPC channel
    for fd in (1, 2):
        ours = os.fstat(fd)
        assert seen["stats"][str(fd)] != [ours.st_dev, ours.st_ino]
    logs = result.logs
    assert "hello from stdout" in logs
    assert "hello from stderr" in logs
    assert logs.index("START RequestId: fd-check") < logs.index("hello from stdout")
    assert logs.index("hello from stderr") < logs.index("END RequestId: fd-check")


async def test_zygote_output_goes_to_the_log_not_the_daemons_stderr(
    process_runner: RunnerFactory, tmp_path: Path
) -> None:
    """A pool's own zygote that dies at start wrote its traceback into its own memfd; the
    daemon logs its tail with ``zygote.start_failed`` (and the pool falls back to
    spawning, without retrying the zygote)."""
    (tmp_path / "msgspec.py").write_text("raise RuntimeError('broken msgspec for this test')\n")
    with capture_logs() as logs:
        async with process_runner(environment={"PYTHONPATH": str(tmp_path)}) as runner:
            result = await runner.invoke(event({}))
    assert not result.ok  # the spawned fallback cannot import it either
    failed = [e for e in logs if e["event"] == "zygote.start_failed"]
    assert len(failed) == 1, logs
    assert "broken msgspec for this test" in failed[0]["output"]


def test_a_source_checkout_on_the_daemons_pythonpath_stays_importable_for_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon found eventrun through PYTHONPATH (a checkout, not an install): workers
    (``python -m eventrun.workers...``) get that one entry, whatever ``inherit_env`` says;
    nothing else of the daemon's PYTHONPATH."""
    import eventrun

    root = str(Path(eventrun.__file__).resolve().parent.parent)
    daemon = {"PYTHONPATH": os.pathsep.join(["/daemon/extra", root])}

    def worker_path(inherit: tuple[str, ...], environ: dict[str, str]) -> str | None:
        settings = Settings(handler="app.handler", inherit_env=inherit)
        env = function_environment("f", settings, Path("/srv/app"), "eu-west-1", environ=environ)
        return env.get("PYTHONPATH")

    assert worker_path((), daemon) == root
    assert worker_path(("PYTHONPATH",), daemon) == daemon["PYTHONPATH"]  # inherited: as is
    assert worker_path(("PYTHONPATH",), {"PYTHONPATH": "/daemon/extra"}) == "/daemon/extra"
    assert worker_path((), {"PYTHONPATH": "/daemon/extra"}) is None  # eventrun is installed
    # `PYTHONPATH=. eventrun run` in the checkout: "." is the task root in the worker
    monkeypatch.chdir(root)
    assert worker_path(("PYTHONPATH",), {"PYTHONPATH": "."}) == os.pathsep.join([root, "."])
    assert worker_path((), {"PYTHONPATH": "."}) == root
