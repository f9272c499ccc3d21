"""Plugin config models (eventrun/config/_plugins.py): a kind registered in the
``eventrun.triggers`` / ``eventrun.connections`` entry point groups is validated, checked,
documented and handed to its source exactly like a built-in kind."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from eventrun import plugins as _plugins
from eventrun.config import config_json_schema, config_model, parse_config
from eventrun.config._plugins import plugin_models
from eventrun.exceptions import ConfigError
from tests._runtime_kit import running_app, write_app

DEMO = '''
from eventrun.abc import BatchControls, ConnectionModel, Duration, TriggerModel
from eventrun.testing import MemoryQueue


class DemoConnection(ConnectionModel):
    """A demo broker."""

    prefix: str


class DemoTrigger(BatchControls):
    """Read a demo queue."""

    queue: str
    connection: str | None = None
    messages: int = 0
    batch_size: int = 7
    ack_wait: Duration = 30.0


class BrokenShape(TriggerModel):
    """Never registered as a trigger: used to prove TriggerModel is importable."""


def create(spec):
    queue = MemoryQueue()
    prefix = spec.connection.prefix if spec.connection is not None else ""
    for i in range(spec.config.messages):
        queue.send(f"{prefix}{spec.config.queue}-{i}".encode())
    return queue
'''


def _install(root: Path, entry_points: str, module: str = DEMO) -> None:
    (root / "eventrun_demo.py").write_text(module)
    dist = root / "eventrun_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: eventrun-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def _clear() -> None:
    plugin_models.cache_clear()
    config_model.cache_clear()
    _plugins._registry.cache_clear()
    _plugins._load.cache_clear()


@pytest.fixture
def demo_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution with a ``demo`` source, trigger model and connection model."""
    site = tmp_path / "site"
    site.mkdir()
    _install(
        site,
        """
        [eventrun.sources]
        demo = eventrun_demo:create
        [eventrun.triggers]
        demo = eventrun_demo:DemoTrigger
        [eventrun.connections]
        demo = eventrun_demo:DemoConnection
        """,
    )
    monkeypatch.syspath_prepend(str(site))
    _clear()
    yield
    _clear()


def _config(triggers: str, connections: str = "") -> str:
    return (
        "functions:\n  f:\n    handler: app:handler\n    triggers:\n"
        + textwrap.indent(textwrap.dedent(triggers), "      ")
        + textwrap.dedent(connections)
    )


def test_a_plugin_trigger_is_validated_by_the_plugins_model(demo_plugin: None) -> None:
    config = parse_config(
        _config("- demo: {queue: orders, maximum_batching_window: 2s, ack_wait: 500ms}\n"),
        filename="eventrun.yaml",
    )
    trigger = config.functions["f"].triggers[0]
    assert trigger.kind == "demo"
    spec = trigger.spec
    assert type(spec).__name__ == "DemoTrigger"
    assert spec.queue == "orders"  # type: ignore[union-attr]
    assert spec.batch_size == 7  # the plugin's own default  # type: ignore[union-attr]
    assert spec.maximum_batching_window == 2.0  # type: ignore[union-attr]
    assert spec.ack_wait == 0.5  # type: ignore[union-attr]


def test_a_plugin_triggers_unknown_key_names_its_key_path(demo_plugin: None) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config("- demo: {queue: orders, prefetch: 3}\n"), filename="eventrun.yaml")
    assert "eventrun.yaml: functions.f.triggers[0].demo.prefetch" in str(caught.value)


def test_a_plugin_trigger_missing_a_required_key_says_so(demo_plugin: None) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config("- demo: {batch_size: 5}\n"), filename="eventrun.yaml")
    assert "functions.f.triggers[0].demo.queue" in str(caught.value)


def test_a_plugin_connection_must_exist_and_is_resolved(demo_plugin: None) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config("- demo: {queue: q, connection: main}\n"), filename="eventrun.yaml")
    assert "functions.f.triggers[0].demo.connection" in str(caught.value)
    assert "connections.demo" in str(caught.value)
    config = parse_config(
        _config(
            "- demo: {queue: q, connection: main, on_failure: 'demo:main/dead'}\n",
            "connections:\n  demo:\n    main: {prefix: 'p-'}\n",
        ),
        filename="eventrun.yaml",
    )
    found = config.connection_for("demo", "main")
    assert type(found).__name__ == "DemoConnection"
    assert found.prefix == "p-"  # type: ignore[attr-defined]


def test_a_plugin_destination_must_name_a_connection(demo_plugin: None) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            _config("- demo: {queue: q, on_failure: 'demo:nowhere/dead'}\n"),
            filename="eventrun.yaml",
        )
    assert "functions.f.triggers[0].demo.on_failure" in str(caught.value)
    assert "must name a connection in connections.demo" in str(caught.value)


def test_the_schema_documents_plugin_kinds(demo_plugin: None) -> None:
    schema = json.dumps(config_json_schema())
    assert "DemoTrigger" in schema
    assert "Read a demo queue." in schema
    assert "DemoConnection" in schema


def test_a_plugin_model_that_fails_to_import_is_named_when_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "[eventrun.triggers]\ndemo = eventrun_demo:DemoTrigger\n", "import nope_x\n")
    monkeypatch.syspath_prepend(str(site))
    _clear()
    try:
        with pytest.raises(ConfigError) as caught:
            parse_config(_config("- demo: {queue: q}\n"), filename="eventrun.yaml")
        message = str(caught.value)
        assert "functions.f.triggers[0]" in message
        assert "the 'demo' trigger plugin could not be loaded" in message
        assert "nope_x" in message
    finally:
        _clear()


def test_without_plugins_the_config_model_is_the_builtin_one() -> None:
    _clear()
    from eventrun.config import Config

    if not plugin_models().triggers and not plugin_models().connections:
        assert config_model() is Config
    else:  # installed plugins (make setup installs plugins/*) extend it
        assert issubclass(config_model(), Config)


async def test_the_runtime_hands_a_plugin_source_its_model_and_connection(
    demo_plugin: None, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    config = write_app(
        tmp_path / "app",
        """
        connections:
          demo:
            main: {prefix: "p-"}
        functions:
          f:
            handler: app:handler
            runtime: inline
            triggers:
              - demo: {queue: orders, connection: main, messages: 20, batch_size: 5,
                        maximum_batching_window: 0s}
        """,
        {
            "app.py": f"""
            def handler(event, context):
                with open({str(ledger)!r}, "a") as f:
                    for r in event["Records"]:
                        f.write(r["body"] + "\\n")
            """
        },
    )
    async with running_app(config, serve_http=False):
        with anyio.fail_after(20):
            while not ledger.exists() or len(ledger.read_text().splitlines()) < 20:  # noqa: ASYNC110 - the handler only writes a file
                await anyio.sleep(0.02)
    assert sorted(ledger.read_text().splitlines()) == sorted(f"p-orders-{i}" for i in range(20))
