"""``eventrun check`` and ``eventrun invoke`` with Runtime API functions."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from eventrun.cli import main
from tests._runtime_kit import write_app

from .conftest import APPS

# The first test that needs aws-lambda-ric installs it (npm builds a native addon: about
# two minutes; `make test` does it beforehand with `make node-ric`); each test bounds its
# own waits.
pytestmark = pytest.mark.timeout(600)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_check_accepts_a_bootstrap_and_invoke_runs_it(tmp_path: Path) -> None:
    shutil.copytree(APPS / "custom_py", tmp_path / "fn")
    config = write_app(tmp_path, "functions:\n  custom: {runtime: provided, code: fn}\n")
    result = cli("check", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "ok  function custom: provided" in result.stdout
    result = cli("invoke", "custom", "--payload", '{"echo": 3}', "-c", str(config))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["echo"] == 3


def test_check_says_what_to_install(tmp_path: Path) -> None:
    shutil.copytree(APPS / "node_fn", tmp_path / "node")
    (tmp_path / "empty").mkdir()
    yaml = """
        functions:
          node: {runtime: nodejs20.x, handler: index.handler, code: node}
        """
    result = cli("check", "-c", str(write_app(tmp_path, yaml)))
    assert result.exit_code == 2
    assert (
        f"cd {tmp_path / 'node'} && npm install aws-lambda-ric (it builds a native addon: "
        "apt-get install nodejs npm cmake g++ make autoconf automake libtool)" in result.stderr
    )
    yaml = "functions:\n  custom: {runtime: provided.al2, code: empty}\n"
    result = cli("check", "-c", str(write_app(tmp_path, yaml)))
    assert result.exit_code == 2
    assert f"no executable 'bootstrap' in {tmp_path / 'empty'}" in result.stderr
    yaml = "functions:\n  other: {command: [no-such-runtime-client, x]}\n"
    result = cli("check", "-c", str(write_app(tmp_path, yaml)))
    assert result.exit_code == 2
    assert "command 'no-such-runtime-client' not found on PATH" in result.stderr


def test_config_rules(tmp_path: Path) -> None:
    for yaml, message in [
        ("functions:\n  f: {runtime: nodejs20.x}\n", "functions.f.handler: is required"),
        (
            "functions:\n  f: {runtime: nodejs20.x, handler: 'a.b:c'}\n",
            'functions.f.handler: must be Lambda style "dir/file.export"',
        ),
        (
            "functions:\n  f: {runtime: inline, handler: a:b, command: [x]}\n",
            "functions.f.command: inline functions run in the daemon",
        ),
    ]:
        result = cli("check", "-c", str(write_app(tmp_path, yaml)))
        assert result.exit_code == 2
        assert message in result.stderr, result.stderr


def test_check_accepts_an_installed_node_function(tmp_path: Path) -> None:
    from tests.fixtures.node_ric import node_function

    node_function(APPS / "node_fn", tmp_path)
    yaml = "functions:\n  n: {runtime: nodejs22.x, handler: index.handler, code: node_fn}\n"
    result = cli("check", "-c", str(write_app(tmp_path, yaml)))
    assert result.exit_code == 0, result.output
    assert "ok  function n: nodejs22.x" in result.stdout
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    if not node.stdout.startswith("v22."):
        assert f"note: runtime nodejs22.x runs on the machine's node {node.stdout.strip()}" in (
            result.stdout
        )


def test_code_is_the_task_root_of_python_functions_too(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(
        "import os\ndef handler(event, context):\n"
        "    return {'cwd': os.getcwd(), 'root': os.environ['LAMBDA_TASK_ROOT']}\n"
    )
    config = write_app(tmp_path, "functions:\n  p: {handler: app.handler, code: src}\n")
    assert cli("check", "-c", str(config)).exit_code == 0
    result = cli("invoke", "p", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "cwd": str(tmp_path / "src"),
        "root": str(tmp_path / "src"),
    }
