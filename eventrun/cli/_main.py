"""The ``eventrun`` command line (click).

Error classes map to exit codes: a config or plugin error prints one line and exits 2; an
invocation that fails prints Lambda's error JSON and exits 1.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import anyio
import click

from eventrun.cli._dlq import dlq
from eventrun.cli._status import status
from eventrun.common import one_line
from eventrun.exceptions import ConfigError, EventrunError
from eventrun.observe import quiet_logging

__all__ = ["main"]

CONFIG_HELP = "Config file (default ./eventrun.yaml)."


def _fail(exc: EventrunError) -> NoReturn:
    """One ``error:`` line per problem (user text in them escaped by ``one_line``)."""
    click.echo(f"error: {one_line(str(exc))}", err=True)
    extra = getattr(exc, "problems", [])[1:]
    for line in extra:
        click.echo(f"error: {one_line(line)}", err=True)
    sys.exit(exc.exit_code)


def _startup_error(group: BaseExceptionGroup[BaseException]) -> EventrunError | None:
    """The first eventrun error inside the task groups' wrapping, if any."""
    for exc in group.exceptions:
        if isinstance(exc, EventrunError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _startup_error(exc)
            if found is not None:
                return found
    return None


def _load(config: str) -> Any:
    from eventrun.config import load_config

    try:
        return load_config(config)
    except EventrunError as exc:
        _fail(exc)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventrun")
def main() -> None:
    """eventrun: run AWS-Lambda-style handlers off AWS."""


@main.command()
@click.option("-c", "--config", default="eventrun.yaml", show_default=True, help=CONFIG_HELP)
@click.option("--port", type=int, default=None, help="Override server.port (0: any free port).")
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--reload",
    is_flag=True,
    help="Development: reload when the config or a handler's .py file changes.",
)
def run(config: str, port: int | None, log_level: str, log_format: str, reload: bool) -> None:
    """Run the daemon until SIGTERM/SIGINT (a second signal exits at once).

    SIGHUP reloads the config and the handlers' code: new workers for changed
    functions, sources and their positions untouched (README, Operating it)."""
    from eventrun.observe import configure_logging, configure_tracing, shutdown_tracing

    configure_logging(log_level, log_format)  # type: ignore[arg-type]
    configure_tracing()
    loaded = _load(config)
    try:
        anyio.run(_run_daemon, loaded, port, reload, backend_options={"use_uvloop": True})
    except EventrunError as exc:
        _fail(exc)
    except BaseExceptionGroup as group:
        # start-up errors raised inside task groups (a port in use...) arrive wrapped
        error = _startup_error(group)
        if error is None:
            raise
        _fail(error)
    finally:
        shutdown_tracing()  # flush the spans still buffered


async def _run_daemon(loaded: Any, port: int | None, reload: bool = False) -> None:
    from eventrun.runtime import Runtime, serve_reloads

    runtime = Runtime(loaded, port=port)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def _signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    if stop.is_set():
                        os._exit(1)
                    stop.set()

        async def _serve(*, task_status: Any) -> None:
            await runtime.serve(stop, task_status=task_status)
            tg.cancel_scope.cancel()  # stopped: the signal and reload tasks end too

        tg.start_soon(_signals)
        await tg.start(_serve)
        tg.start_soon(lambda: serve_reloads(runtime, watch=reload))


@main.command()
@click.option("-c", "--config", default="eventrun.yaml", show_default=True, help=CONFIG_HELP)
def check(config: str) -> None:
    """Validate the config and import every handler; exit 2 on error."""
    from eventrun import plugins as _plugins
    from eventrun.config import hidden_env
    from eventrun.runtime import Runtime
    from eventrun.workers import (
        code_directory,
        function_environment,
        load_handler,
        runtime_problems,
        uses_runtime_api,
        version_note,
    )

    quiet_logging()
    loaded = _load(config)
    try:
        for name, fn in loaded.config.functions.items():
            code_dir = code_directory(fn, loaded.dir)
            if uses_runtime_api(fn.runtime, fn.command):
                env = function_environment(
                    name, fn, code_dir, "us-east-1", hidden=hidden_env(loaded.config)
                )
                found = runtime_problems(fn.runtime, fn.command, fn.handler, code_dir, env)
                if found:
                    raise ConfigError(f"function {name!r}: " + "; ".join(found))
                click.echo(f"ok  function {name}: {fn.runtime} {' '.join(fn.command or [])}")
                if not fn.command and (note := version_note(fn.runtime, env)):
                    click.echo(f"    note: {note}")
                continue
            load_handler(fn.handler, code_dir)
            click.echo(f"ok  function {name}: {fn.handler}")
        runtime = Runtime(loaded, serve_http=False)
        for _fname, spec, _trig in runtime.trigger_specs():
            _plugins.source_factory(spec.kind)(spec)
            click.echo(f"ok  trigger {spec.name}")
    except EventrunError as exc:
        _fail(exc)
    click.echo(f"{loaded.path.name}: valid ({len(loaded.config.functions)} functions)")


@main.command()
def schema() -> None:
    """Print the JSON Schema of eventrun.yaml."""
    from eventrun.config import config_json_schema

    click.echo(json.dumps(config_json_schema(), indent=2))


def _payload(value: str | None) -> bytes:
    if value is None:
        return b"{}"
    if value.startswith("@"):
        return Path(value[1:]).read_bytes()
    try:
        json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from exc
    return value.encode()


@main.command()
@click.argument("function")
@click.option("--payload", help="Event JSON, or @FILE.")
@click.option("--async", "is_async", is_flag=True, help="Queue an asynchronous invocation.")
@click.option("--url", help="A running daemon (default: run the handler standalone).")
@click.option("-c", "--config", default="eventrun.yaml", show_default=True, help=CONFIG_HELP)
def invoke(
    function: str, payload: str | None, is_async: bool, url: str | None, config: str
) -> None:
    """Invoke FUNCTION and print its result (error JSON and exit 1 on failure)."""
    quiet_logging()
    body = _payload(payload)
    if url:
        from eventrun.cli._client import invoke_remote

        try:
            status, result, failed = invoke_remote(url, function, body, is_async=is_async)
        except EventrunError as exc:
            _fail(exc)
        if result:
            click.echo(result)
        elif is_async:
            click.echo(json.dumps({"StatusCode": status}))
        sys.exit(1 if failed else 0)
    loaded = _load(config)
    if function not in loaded.config.functions:
        names = ", ".join(sorted(loaded.config.functions)) or "none"
        click.echo(
            f"error: no function {function!r} in {loaded.path.name} (have: {names})", err=True
        )
        sys.exit(2)
    if is_async:
        click.echo("error: --async needs a running daemon (--url)", err=True)
        sys.exit(2)
    ok, out, logs = anyio.run(_invoke_standalone, loaded, function, body)
    if logs:
        click.echo(logs.rstrip(), err=True)
    click.echo(out)
    sys.exit(0 if ok else 1)


async def _invoke_standalone(loaded: Any, function: str, body: bytes) -> tuple[bool, str, str]:
    from eventrun.config import hidden_env
    from eventrun.workers import create_runner

    cfg = loaded.config.functions[function]
    hidden = hidden_env(loaded.config)
    async with create_runner(function, cfg, config_dir=loaded.dir, hidden_env=hidden) as runner:
        result = await runner.invoke(body)
    return result.ok, result.payload.decode(), result.logs


@main.command("generate-event")
@click.argument("kind", type=click.Choice(["sqs", "kafka", "s3", "schedule", "http", "redis"]))
def generate_event(kind: str) -> None:
    """Print a Lambda-shaped sample event."""
    from eventrun.cli._samples import sample_event

    click.echo(json.dumps(sample_event(kind), indent=2))


main.add_command(status)
main.add_command(dlq)


if __name__ == "__main__":  # pragma: no cover
    main()
