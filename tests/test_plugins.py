"""The plugin registry (eventrun/_plugins.py): entry points found on sys.path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventrun import plugins as _plugins
from eventrun.exceptions import PluginNotFound


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A distribution on sys.path whose ``eventrun.sinks`` entry point names a module that
    imports a package that is not installed."""
    (tmp_path / "eventrun_nats_sink.py").write_text("import nats_client_not_installed\n")
    dist = tmp_path / "eventrun_nats_sink-0.1.dist-info"
    dist.mkdir()
    metadata = "Metadata-Version: 2.1\nName: eventrun-nats-sink\nVersion: 0.1\n"
    (dist / "METADATA").write_text(metadata)
    (dist / "entry_points.txt").write_text("[eventrun.sinks]\nnats = eventrun_nats_sink:create\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _plugins._registry.cache_clear()
    _plugins._load.cache_clear()
    try:
        yield "nats"
    finally:
        _plugins._registry.cache_clear()
        _plugins._load.cache_clear()


def test_plugin_whose_dependency_is_missing_names_the_package(broken_plugin: str) -> None:
    assert broken_plugin in _plugins.sink_kinds()
    with pytest.raises(PluginNotFound) as caught:
        _plugins.sink_factory(broken_plugin)
    message = str(caught.value)
    assert "the sink kind 'nats' needs a package that is not installed" in message
    assert "pip install nats_client_not_installed" in message
    assert isinstance(caught.value.__cause__, ImportError)
