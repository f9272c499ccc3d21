"""The public surface and the architecture's import rules (STYLE.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import eventrun
from eventrun import plugins as _plugins

PACKAGE = Path(eventrun.__file__).parent
SEAM = {"eventrun.abc", "eventrun.asgi", "eventrun.exceptions", "eventrun.runtime._clock"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


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


def test_core_never_imports_sources_or_sinks() -> None:
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("sources", "sinks"):
            continue
        bad = {m for m in _imports(path) if m.startswith(("eventrun.sources", "eventrun.sinks"))}
        assert not bad, f"{rel} imports {bad}: the core must go through the plugin registry"


def test_sources_and_sinks_use_only_the_seam() -> None:
    for folder in ("sources", "sinks"):
        for path in (PACKAGE / folder).glob("*.py"):
            plugin_layer = ("eventrun.sources", "eventrun.sinks")
            bad = {
                m
                for m in _imports(path)
                if m.startswith("eventrun.") and m not in SEAM and not m.startswith(plugin_layer)
            }
            assert not bad, f"{folder}/{path.name} imports {bad}: plugins import only the seam"


def test_builtin_kinds_are_registered_as_entry_points() -> None:
    assert {"sqs", "kafka", "redis_streams", "http", "cron", "filewatch"} <= set(
        _plugins.source_kinds()
    )
    assert {"local", "file", "function", "http", "https", "sqs", "kafka", "redis"} <= set(
        _plugins.sink_kinds()
    )


def test_unknown_plugin_kind_is_an_actionable_error() -> None:
    import pytest

    from eventrun.exceptions import PluginNotFound

    with pytest.raises(PluginNotFound, match="no sink plugin is registered for kind 'nats'"):
        _plugins.sink_factory("nats")


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
