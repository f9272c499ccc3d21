"""The file:PATH sink: JSON lines appended (and fsynced) to a file."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import anyio
import pytest

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable
from eventrun.sinks.file import FileSink, create


def _spec(target: str, config_dir: Path) -> SinkSpec:
    return SinkSpec(url=f"file:{target}", kind="file", target=target, config_dir=config_dir)


def _read(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_registered_as_the_file_entry_point() -> None:
    [point] = entry_points(group="eventrun.sinks", name="file")
    assert point.load() is create


async def test_appends_one_line_per_message_under_the_config_dir(tmp_path: Path) -> None:
    async with create(_spec("out/deep/results.jsonl", tmp_path)) as sink:
        await sink.send([OutMessage(b'{"n":1}', key="k"), OutMessage(b'{"n":2}')])
        await sink.send([OutMessage(b'"three"')])
        await sink.send([])
    assert _read(tmp_path / "out" / "deep" / "results.jsonl") == [
        b'{"n":1}\n',
        b'{"n":2}\n',
        b'"three"\n',
    ]


async def test_a_pretty_printed_payload_becomes_one_line(tmp_path: Path) -> None:
    document = {"a": [1, 2], "b": "caf\u00e9"}
    async with create(_spec("x.jsonl", tmp_path)) as sink:
        await sink.send([OutMessage(json.dumps(document, indent=2).encode())])
    [line] = _read(tmp_path / "x.jsonl")
    assert json.loads(line) == document


async def test_a_multi_line_payload_that_is_not_json_is_rejected(tmp_path: Path) -> None:
    async with create(_spec("x.jsonl", tmp_path)) as sink:
        with pytest.raises(SinkRejected, match="not JSON"):
            await sink.send([OutMessage(b"not\njson")])
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("style", ["{}", "//{}"])
def test_absolute_paths_ignore_the_config_dir(style: str, tmp_path: Path) -> None:
    sink = FileSink(_spec(style.format(tmp_path / "abs.jsonl"), Path("/elsewhere")))
    assert sink.path == tmp_path / "abs.jsonl"


async def test_concurrent_sends_never_interleave_lines(tmp_path: Path) -> None:
    async with create(_spec("c.jsonl", tmp_path)) as sink:

        async def writer(name: str) -> None:
            for batch in range(20):
                await sink.send(
                    [OutMessage(b'"%s-%d-%d"' % (name.encode(), batch, i)) for i in range(5)]
                )

        async with anyio.create_task_group() as tg:
            for name in ("a", "b", "c"):
                tg.start_soon(writer, name)
    lines = [json.loads(line) for line in _read(tmp_path / "c.jsonl")]
    assert len(lines) == 300
    for start in range(0, 300, 5):  # every batch of five is contiguous and in order
        prefix = lines[start].rsplit("-", 1)[0]
        assert lines[start : start + 5] == [f"{prefix}-{i}" for i in range(5)]


async def test_an_unwritable_path_is_sink_unavailable(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    async with create(_spec("blocker/x.jsonl", tmp_path)) as sink:
        with pytest.raises(SinkUnavailable, match="blocker"):
            await sink.send([OutMessage(b"{}")])


def test_an_empty_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file:PATH"):
        create(_spec(" ", tmp_path))
