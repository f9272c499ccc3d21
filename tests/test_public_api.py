"""The public surface and the architecture's import rules (STYLE.md)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import eventrun
from eventrun import plugins as _plugins

PACKAGE = Path(eventrun.__file__).parent
ROOT = PACKAGE.parent


# where each public name is defined: ``eventrun.NAME`` must be that very object
HOMES = {
    "eventrun.abc": [
        "InvokeOutcome",
        "OutMessage",
        "Poller",
        "PushSource",
        "Record",
        "Route",
        "Sink",
        "SinkSpec",
        "SourceContext",
        "SourceSpec",
    ],
    "eventrun.exceptions": [
        "ConfigError",
        "EventrunError",
        "FunctionSaturated",
        "HandlerImportError",
        "PluginNotFound",
        "SinkError",
        "SinkRejected",
        "SinkUnavailable",
        "SourceAuthError",
        "SourceError",
        "SourceUnavailable",
    ],
    "eventrun.config": ["Config", "LoadedConfig", "load_config"],
    "eventrun.runtime._runtime": ["Runtime"],
}


def test_all_is_sorted_and_resolvable() -> None:
    import importlib
    from importlib.metadata import version

    assert eventrun.__all__ == sorted(eventrun.__all__)
    homes = {name: module for module, names in HOMES.items() for name in names}
    assert set(eventrun.__all__) == set(homes) | {"__version__"}
    for name, module in homes.items():
        assert getattr(eventrun, name) is getattr(importlib.import_module(module), name), name
        assert isinstance(getattr(eventrun, name), type) or name == "load_config", name
    for name in HOMES["eventrun.exceptions"]:
        assert issubclass(getattr(eventrun, name), eventrun.EventrunError), name
    assert callable(eventrun.load_config)
    assert eventrun.__version__ == version("eventrun")


def test_import_eventrun_does_not_import_broker_clients() -> None:
    code = (
        "import sys, eventrun, eventrun.config;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('aiokafka', 'aiobotocore', 'botocore', 'redis')];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _lint_imports(cwd: Path, env_path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(binary), "--no-cache"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(env_path)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_layering_contracts_hold() -> None:
    """pyproject.toml's import-linter contracts (also run by ``make lint``)."""
    result = _lint_imports(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "message"),
    [
        (
            "server/_openapi.py",
            "from eventrun.runtime import Runtime",
            "eventrun.server is not allowed to import eventrun.runtime",
        ),
        (
            "sources/cron/_fields.py",
            "from eventrun.dispatch import Backoff",
            "eventrun.sources is not allowed to import eventrun.dispatch",
        ),
        (
            "dispatch/_lanes.py",
            "import eventrun.sinks.local",
            "eventrun.dispatch is not allowed to import eventrun.sinks",
        ),
        (
            "store/_dlq.py",
            "from eventrun.dispatch import Backoff",
            "eventrun.store is not allowed to import eventrun.dispatch",
        ),
    ],
)
def test_a_wrong_import_breaks_the_contracts(
    tmp_path: Path, module: str, line: str, message: str
) -> None:
    shutil.copytree(PACKAGE, tmp_path / "eventrun", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "eventrun" / module).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    result = _lint_imports(tmp_path, tmp_path)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout


def test_builtin_kinds_are_registered_as_entry_points() -> None:
    assert {"sqs", "kafka", "redis_streams", "http", "cron", "filewatch"} <= set(
        _plugins.source_kinds()
    )
    assert {"local", "file", "function", "http", "https", "sqs", "kafka", "redis"} <= set(
        _plugins.sink_kinds()
    )


def test_unknown_plugin_kind_is_an_actionable_error() -> None:
    from eventrun.exceptions import PluginNotFound

    with pytest.raises(PluginNotFound, match="no sink plugin is registered for kind 'carrier'"):
        _plugins.sink_factory("carrier")


def test_py_typed_is_shipped() -> None:
    assert (PACKAGE / "py.typed").exists()


def test_record_builds_like_a_dataclass_and_compares_by_identity() -> None:
    from eventrun.abc import Record

    positional = Record("t-0", {"offset": 1}, {"v": 1}, b"abc", "value", 1.5, "k", None, 10)
    keywords = Record(
        shard="t-0",
        item_id={"offset": 1},
        event={"v": 1},
        data=b"abc",
        data_key="value",
        timestamp=1.5,
        key="k",
        size=10,
    )
    for record in (positional, keywords):
        assert (record.shard, record.key, record.size, record.attempt) == ("t-0", "k", 10, 1)
    assert Record("s", 1, {}, b"abc", "data", 0.0).size == 3 + 256  # size 0: derived
    assert positional != keywords  # equal fields, still two records
    assert len({positional, keywords, positional}) == 2
    positional.attempt = 3  # the dispatcher and pollers update records in place
    assert positional.attempt == 3


def test_the_old_api_module_still_works_and_warns() -> None:
    code = "import warnings; warnings.simplefilter('error');import eventrun.api"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "eventrun.api is deprecated" in out.stderr
    assert "import build_app and serve_api from eventrun.server" in out.stderr
    sys.modules.pop("eventrun.api", None)
    with pytest.warns(DeprecationWarning, match="eventrun.api is deprecated"):
        old = importlib.import_module("eventrun.api")
    from eventrun.server import build_app, serve_api

    assert old.build_app is build_app
    assert old.serve_api is serve_api


def test_the_seam_hands_out_the_config_base_models() -> None:
    from eventrun import abc, config

    assert abc.BatchControls is config.BatchControls
    assert abc.TriggerModel is config.TriggerModel
    assert abc.ConnectionModel is config.ConnectionModel
    assert issubclass(abc.BatchControls, abc.TriggerModel)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        abc.Nope  # noqa: B018
