"""What a Runtime API function runs: its command line, its environment, and what is missing.

* ``provided``, ``provided.al2``, ``provided.al2023``: the executable ``bootstrap`` in the
  function's code directory (Lambda's custom-runtime convention);
* ``nodejs18.x`` / ``nodejs20.x`` / ``nodejs22.x``: the machine's ``node`` running the
  official interface client, ``aws-lambda-ric`` from npm, found in the code directory's
  ``node_modules`` (or one of its parents', as Node resolves packages), with the handler
  as its argument;
* ``command: [...]``: any other Runtime API client, whatever ``runtime`` says; a first
  word with a ``/`` is relative to the code directory, a bare one is looked up on ``PATH``.

:func:`problems` says what is missing and exactly how to install it (``eventrun check``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from eventrun.exceptions import ConfigError

__all__ = [
    "NODEJS",
    "PROVIDED",
    "problems",
    "runtime_api_env",
    "runtime_command",
    "uses_runtime_api",
    "version_note",
]

PROVIDED = frozenset({"provided", "provided.al2", "provided.al2023"})
NODEJS = frozenset({"nodejs18.x", "nodejs20.x", "nodejs22.x"})
_RIC_ENTRY = ("aws-lambda-ric", "bin", "index.mjs")
_NPM_HINT = "cd {dir} && npm install aws-lambda-ric"
_NPM_SYSTEM = "apt-get install nodejs npm cmake g++ make autoconf automake libtool"


def uses_runtime_api(runtime: str, command: Sequence[str] | None) -> bool:
    """Whether the function's processes speak the Runtime API (anything but Python's
    own workers and inline handlers)."""
    return bool(command) or runtime in PROVIDED or runtime in NODEJS


def find_ric(code_dir: Path) -> Path | None:
    """``node_modules/aws-lambda-ric/bin/index.mjs`` in ``code_dir`` or a parent of it."""
    for directory in (code_dir, *code_dir.parents):
        entry = directory.joinpath("node_modules", *_RIC_ENTRY)
        if entry.is_file():
            return entry
    return None


def _which(word: str, code_dir: Path, env: Mapping[str, str]) -> str | None:
    if "/" in word:
        path = code_dir / word
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(word, path=env.get("PATH", os.defpath))


def problems(
    runtime: str,
    command: Sequence[str] | None,
    handler: str,
    code_dir: Path,
    env: Mapping[str, str],
) -> list[str]:
    """What stops this function's runtime from starting, each with the fix; [] if nothing."""
    found: list[str] = []
    if not code_dir.is_dir():
        return [f"code directory {code_dir} does not exist; create it or fix 'code:'"]
    if command:
        if _which(command[0], code_dir, env) is None:
            where = f"in {code_dir}" if "/" in command[0] else "on PATH"
            found.append(
                f"command {command[0]!r} not found {where} (or not executable); install it "
                "or give its full path in 'command:'"
            )
        return found
    if runtime in PROVIDED:
        bootstrap = code_dir / "bootstrap"
        if not bootstrap.is_file():
            found.append(
                f"runtime {runtime}: no executable 'bootstrap' in {code_dir}; put your "
                "runtime's bootstrap there (chmod +x bootstrap)"
            )
        elif not os.access(bootstrap, os.X_OK):
            found.append(f"runtime {runtime}: {bootstrap} is not executable; chmod +x {bootstrap}")
    elif runtime in NODEJS:
        if _which("node", code_dir, env) is None:
            found.append(
                f"runtime {runtime}: 'node' not found on PATH; install Node.js ({_NPM_SYSTEM})"
            )
        if find_ric(code_dir) is None:
            found.append(
                f"runtime {runtime}: the aws-lambda-ric package is not installed for "
                f"{code_dir}; install it with: {_NPM_HINT.format(dir=code_dir)} "
                f"(it builds a native addon: {_NPM_SYSTEM})"
            )
        if not handler:
            found.append(f"runtime {runtime}: 'handler' is required (\"file.export\")")
    return found


def version_note(runtime: str, env: Mapping[str, str]) -> str | None:
    """For ``nodejs<N>.x``: a note when the machine's ``node`` is another major version
    (it runs anyway; Lambda would run Node N)."""
    if runtime not in NODEJS:
        return None
    node = shutil.which("node", path=env.get("PATH", os.defpath))
    if node is None:
        return None
    try:
        done = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = done.stdout.strip()  # v20.11.1
    wanted = runtime.removeprefix("nodejs").removesuffix(".x")
    if found.startswith("v") and found[1:].split(".")[0] != wanted:
        return f"runtime {runtime} runs on the machine's node {found} ({node}), not Node {wanted}"
    return None


def runtime_command(
    runtime: str,
    command: Sequence[str] | None,
    handler: str,
    code_dir: Path,
    env: Mapping[str, str],
    memory_mb: int,
) -> list[str]:
    """The argv of one runtime process; ConfigError naming the fix when it cannot start."""
    missing = problems(runtime, command, handler, code_dir, env)
    if missing:
        raise ConfigError("; ".join(missing))
    if command:
        first = _which(command[0], code_dir, env)
        assert first is not None
        return [first, *command[1:]]
    if runtime in PROVIDED:
        return [str(code_dir / "bootstrap")]
    node = _which("node", code_dir, env)
    ric = find_ric(code_dir)
    assert node is not None
    assert ric is not None
    # as Lambda starts Node: the old-generation heap sized from the function's memory
    heap = max(64, int(memory_mb * 0.9))
    return [node, f"--max-old-space-size={heap}", str(ric), handler]


def runtime_api_env(
    base: Mapping[str, str],
    *,
    runtime: str,
    command: Sequence[str] | None,
    code_dir: Path,
    argv: Sequence[str],
) -> dict[str, str]:
    """Lambda's variables on top of the function environment (address added per process)."""
    env = dict(base)
    if runtime in NODEJS:
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{runtime}"
        env["NODE_PATH"] = str(code_dir / "node_modules")
        env["LAMBDA_RUNTIME_DIR"] = str(Path(argv[2]).parent.parent)
    elif runtime.startswith("python3."):
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{runtime}"
        env["LAMBDA_RUNTIME_DIR"] = str(code_dir)
    else:  # provided*: Lambda sets no AWS_EXECUTION_ENV for custom runtimes
        env.pop("AWS_EXECUTION_ENV", None)
        env["LAMBDA_RUNTIME_DIR"] = str(code_dir)
    env["LAMBDA_TASK_ROOT"] = str(code_dir)
    env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "on-demand"
    env["TZ"] = ":UTC"
    return env
