"""The ``eventrun`` command line (click).

Error classes map to exit codes: a config or plugin error prints one line and exits 2; an
invocation that fails prints Lambda's error JSON and exits 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import anyio
import click

from eventrun.cli._dlq import dlq
from eventrun.cli._sam import SamCommand, parse_overrides, template_options
from eventrun.cli._status import status
from eventrun.common import one_line
from eventrun.exceptions import ConfigError, EventrunError
from eventrun.observe import quiet_logging

__all__ = ["main"]

CONFIG_HELP = "Config file (default ./eventrun.yaml; with -t: none unless given)."


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


def _load(config: str | None) -> Any:
    from eventrun.config import load_config

    try:
        return load_config(config or "eventrun.yaml")
    except EventrunError as exc:
        _fail(exc)


def _load_any(
    config: str | None,
    template: str | None,
    overrides: tuple[str, ...],
    stack_name: str | None,
    *,
    skip_unsupported: bool = True,
) -> Any:
    """The LoadedConfig of ``-c`` alone, or of ``-t`` (with ``-c``), and the SamApp."""
    if template is None:
        if overrides or stack_name:
            click.echo("error: --parameter-overrides and --stack-name need -t", err=True)
            sys.exit(2)
        return _load(config), None
    from eventrun.sam import load_sam

    try:
        app = load_sam(
            template,
            config=config,
            overrides=parse_overrides(overrides),
            stack_name=stack_name,
            skip_unsupported=skip_unsupported,
        )
    except EventrunError as exc:
        _fail(exc)
    return app.loaded, app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventrun")
def main() -> None:
    """eventrun: run AWS-Lambda-style handlers off AWS."""


@main.command(cls=SamCommand)
@click.option("-c", "--config", default=None, help=CONFIG_HELP)
@template_options
@click.option(
    "--skip-unsupported", is_flag=True, help="With -t: start without the unsupported events."
)
@click.option(
    "--create-queues",
    is_flag=True,
    help="With -t: create the template's missing queues on real AWS too (by default only "
    "on an endpoint override such as AWS_ENDPOINT_URL_SQS).",
)
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
    help="Development: reload when the config or a handler's code changes (needs -c).",
)
def run(
    config: str | None,
    template: str | None,
    parameter_overrides: tuple[str, ...],
    stack_name: str | None,
    skip_unsupported: bool,
    create_queues: bool,
    port: int | None,
    log_level: str,
    log_format: str,
    reload: bool,
) -> None:
    """Run the daemon until SIGTERM/SIGINT (a second signal exits at once).

    SIGHUP reloads the config and the handlers' code: new workers for changed
    functions, sources and their positions untouched (README, Operating it)."""
    import structlog

    from eventrun.observe import configure_logging, configure_tracing, shutdown_tracing

    if reload and template is not None:
        click.echo("error: --reload needs -c (a -t template run reloads by restarting)", err=True)
        sys.exit(2)
    configure_logging(log_level, log_format)  # type: ignore[arg-type]
    configure_tracing()
    loaded, app = _load_any(
        config, template, parameter_overrides, stack_name, skip_unsupported=skip_unsupported
    )
    if app is not None:
        log = structlog.get_logger("eventrun.sam")
        for line in app.unsupported:
            log.warning("sam.skipped", problem=line)
        for note in app.notes:
            log.info("sam.note", note=note)
    try:
        anyio.run(
            _run_daemon,
            loaded,
            port,
            app,
            create_queues,
            reload,
            backend_options={"use_uvloop": True},
        )
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


async def _run_daemon(
    loaded: Any,
    port: int | None,
    app: Any = None,
    create_queues: bool = False,
    reload: bool = False,
) -> None:
    from eventrun.runtime import Runtime, serve_reloads

    if app is not None:
        from eventrun.sam import prepare_local

        await prepare_local(app, on_aws=create_queues)

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
        reloadable = app is None  # a SAM template's run is reloaded by a restart
        tg.start_soon(lambda: serve_reloads(runtime, watch=reload, reloadable=reloadable))


@main.command(cls=SamCommand)
@click.option("-c", "--config", default=None, help=CONFIG_HELP)
@template_options
@click.option(
    "--skip-unsupported", is_flag=True, help="With -t: accept a template with unsupported events."
)
@click.option(
    "--print", "print_config", is_flag=True, help="With -t: print the equivalent eventrun.yaml."
)
def check(
    config: str | None,
    template: str | None,
    parameter_overrides: tuple[str, ...],
    stack_name: str | None,
    skip_unsupported: bool,
    print_config: bool,
) -> None:
    """Validate the config and import every handler; exit 2 on error."""
    from eventrun import plugins as _plugins
    from eventrun.runtime import Runtime

    quiet_logging()
    if print_config and template is None:
        click.echo("error: --print needs -t (it prints a template's translation)", err=True)
        sys.exit(2)
    loaded, app = _load_any(config, template, parameter_overrides, stack_name)
    if app is not None and print_config:
        from eventrun.sam import printable

        click.echo(printable(app), nl=False)
        return
    if app is not None:
        from eventrun.sam import make_bucket_dirs

        make_bucket_dirs(app)
        for note in app.notes:
            click.echo(f"note  {note}")
        for line in app.unsupported:
            click.echo(f"skip  {line}", err=True)
    try:
        for name, fn in loaded.config.functions.items():
            _check_function(loaded, name, fn)
        runtime = Runtime(loaded, serve_http=False)
        for _fname, spec, _trig in runtime.trigger_specs():
            _plugins.source_factory(spec.kind)(spec)
            click.echo(f"ok  trigger {spec.name}")
    except EventrunError as exc:
        _fail(exc)
    if app is not None and app.unsupported and not skip_unsupported:
        click.echo(
            f"error: {loaded.path.name}: {len(app.unsupported)} unsupported (listed above); "
            "run with --skip-unsupported to start without them",
            err=True,
        )
        sys.exit(2)
    click.echo(f"{loaded.path.name}: valid ({len(loaded.config.functions)} functions)")


def _check_function(loaded: Any, name: str, fn: Any) -> None:
    """Import a Python function's handler as its worker would, or check that a Runtime API
    function's runtime (bootstrap, node and aws-lambda-ric, command) is there."""
    from eventrun.config import hidden_env
    from eventrun.workers import (
        code_directory,
        function_environment,
        load_handler,
        runtime_problems,
        uses_runtime_api,
        version_note,
    )

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
        return
    with _as_in_worker(dict(fn.environment)):
        load_handler(fn.handler, code_dir)
    click.echo(f"ok  function {name}: {fn.handler}")


@contextlib.contextmanager
def _as_in_worker(environment: dict[str, str]) -> Iterator[None]:
    """While check imports a handler: the function's environment (its PYTHONPATH, e.g.
    SAM layers, on sys.path) and a region, as its worker has them (Lambda always sets
    AWS_REGION; a module-level boto3 client needs one)."""
    entries = [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    saved_path, saved_env = list(sys.path), dict(os.environ)
    sys.path[:0] = entries
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    os.environ.update({"AWS_REGION": region, "AWS_DEFAULT_REGION": region, **environment})
    try:
        yield
    finally:
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)


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


@main.command(cls=SamCommand)
@click.argument("function")
@click.option("--payload", help="Event JSON, or @FILE.")
@click.option("--async", "is_async", is_flag=True, help="Queue an asynchronous invocation.")
@click.option("--url", help="A running daemon (default: run the handler standalone).")
@click.option("-c", "--config", default=None, help=CONFIG_HELP)
@template_options
def invoke(
    function: str,
    payload: str | None,
    is_async: bool,
    url: str | None,
    config: str | None,
    template: str | None,
    parameter_overrides: tuple[str, ...],
    stack_name: str | None,
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
    loaded, _app = _load_any(config, template, parameter_overrides, stack_name)
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
    # create_runner resolves the function's code: against the config directory itself
    async with create_runner(function, cfg, config_dir=loaded.dir, hidden_env=hidden) as runner:
        result = await runner.invoke(body)
    return result.ok, result.payload.decode(), result.logs


@main.command("generate-event", cls=SamCommand)
@click.argument("kind")
@template_options
def generate_event(
    kind: str, template: str | None, parameter_overrides: tuple[str, ...], stack_name: str | None
) -> None:
    """Print a Lambda-shaped sample event: KIND is sqs, kafka, kinesis, dynamodb, s3,
    schedule, http or redis; with -t, FUNCTION.EVENT of the template (the event that event
    delivers)."""
    from eventrun.cli._samples import SAMPLES, sample_event

    quiet_logging()
    if template is not None:
        from eventrun.cli._sam import template_event

        _loaded, app = _load_any(None, template, parameter_overrides, stack_name)
        click.echo(json.dumps(template_event(app, kind), indent=2))
        return
    if kind not in SAMPLES:
        raise click.BadParameter(
            f"{kind!r} is not one of {', '.join(sorted(SAMPLES))} (or FUNCTION.EVENT with -t)",
            param_hint="KIND",
        )
    click.echo(json.dumps(sample_event(kind), indent=2))


main.add_command(status)
main.add_command(dlq)


if __name__ == "__main__":  # pragma: no cover
    main()
