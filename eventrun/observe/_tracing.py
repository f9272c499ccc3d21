"""OpenTelemetry traces: a span per batch and per invocation, context carried through.

Off unless configured, with the standard variables: tracing starts when
``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``) or an OTLP endpoint is
set (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and
``OTEL_SDK_DISABLED`` is not ``true``. The SDK reads the rest (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, headers...). It
needs the ``otel`` extra (``pip install 'eventrun[otel]'``); without it a configured
daemon logs ``tracing.unavailable`` and runs untraced. When off, every helper here is a
no-op costing one boolean test.

Spans:

* ``batch FUNCTION`` (consumer) per poller batch, parent = the first record's context,
  with a link to each record's producer context (up to 128);
* ``invoke FUNCTION`` (internal) per invocation, child of whatever is current (a batch,
  an HTTP request, an async invocation).

Context is read from the records' own carriers (:func:`record_carrier`): SQS
``AWSTraceHeader`` (X-Ray) and string message attributes, Kafka headers, Redis entry
fields, HTTP headers. Every message eventrun publishes (sinks, DLQs, ``on_success``) gets
the current context as its ``traceparent`` attribute (Kafka header, SQS message
attribute, Redis field), so a pipeline of functions is one trace.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import structlog

from eventrun.abc import OutMessage, Record
from eventrun.common import TRACE_HEADER, traceparent_to_xray, xray_to_traceparent

__all__ = [
    "async_span",
    "attached",
    "batch_span",
    "configure_tracing",
    "extract_context",
    "invoke_span",
    "record_carrier",
    "shutdown_tracing",
    "trace_attributes",
    "tracing_enabled",
    "with_trace",
    "xray_to_traceparent",
]

log = structlog.get_logger("eventrun.tracing")

_state: dict[str, Any] = {"on": False}
MAX_LINKS = 128


def tracing_enabled() -> bool:
    return bool(_state["on"])


def _wanted(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return bool(exporter) or any(environ.get(name) for name in endpoints)


def configure_tracing(environ: Mapping[str, str] | None = None) -> bool:
    """Start the SDK if the environment asks for traces; True when tracing is on."""
    env = os.environ if environ is None else environ
    if not _wanted(env):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        log.warning("tracing.unavailable", error=str(exc), fix="pip install 'eventrun[otel]'")
        return False
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    defaults = {} if named else {"service.name": "eventrun"}  # the variables win
    provider = TracerProvider(resource=Resource.create(defaults))
    kinds = [k.strip() for k in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    for kind in kinds:
        if kind == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif kind == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing.enabled", exporters=kinds)
    return True


def install(provider: Any) -> None:
    """Trace with ``provider`` (an SDK TracerProvider; tests hand one with an in-memory
    exporter)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _state.update(
        on=True,
        provider=provider,
        tracer=provider.get_tracer("eventrun"),
        propagator=TraceContextTextMapPropagator(),
    )


def shutdown_tracing() -> None:
    """Flush and stop the exporters (at daemon exit)."""
    if _state["on"]:
        _state["on"] = False
        _state["provider"].shutdown()


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(value).decode(errors="replace")  # a Kafka header value
    if isinstance(value, dict) and isinstance(value.get("stringValue"), str):
        return str(value["stringValue"])  # an SQS message attribute
    return None


def _add(carrier: dict[str, str], values: Any) -> None:
    if isinstance(values, dict):
        for k, v in values.items():
            text = _text(v)
            if text is not None:
                carrier[str(k).lower()] = text


def record_carrier(event: Mapping[str, Any]) -> dict[str, str]:
    """The propagation headers a Lambda-shaped record (or HTTP event) carries: Kafka
    headers, HTTP headers, SQS message attributes and ``AWSTraceHeader``, Redis fields."""
    carrier: dict[str, str] = {}
    headers = event.get("headers")
    if isinstance(headers, list):  # Kafka: [{"key": [bytes...]}, ...]
        for header in headers:
            _add(carrier, header)
    else:  # HTTP (API Gateway payload 2.0)
        _add(carrier, headers)
    _add(carrier, event.get("messageAttributes"))
    redis = event.get("redis")
    if isinstance(redis, dict):
        _add(carrier, redis.get("fields"))
    xray = (event.get("attributes") or {}).get("AWSTraceHeader")
    if "traceparent" not in carrier and isinstance(xray, str):
        parent = xray_to_traceparent(xray)
        if parent is not None:
            carrier["traceparent"] = parent
    return carrier


def extract_context(carrier: Mapping[str, str]) -> Any:
    """The OTel context of a carrier (None when it has none or tracing is off)."""
    if not _state["on"] or "traceparent" not in carrier:
        return None
    from opentelemetry import trace

    ctx = _state["propagator"].extract(carrier)
    span_context = trace.get_current_span(ctx).get_span_context()
    return ctx if span_context.is_valid else None


@contextlib.contextmanager
def batch_span(function: str, trigger: str, records: Sequence[Record]) -> Iterator[None]:
    """A consumer span around one batch: parent = the first record's context, links =
    every record's context."""
    if not _state["on"]:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind

    parent = None
    links = []
    for record in records[:MAX_LINKS]:
        ctx = extract_context(record_carrier(record.plain_event()))
        if ctx is None:
            continue
        parent = parent or ctx
        links.append(Link(trace.get_current_span(ctx).get_span_context()))
    attributes = {
        "faas.trigger": "pubsub",
        "faas.name": function,
        "eventrun.trigger": trigger,
        "messaging.batch.message_count": len(records),
    }
    with _state["tracer"].start_as_current_span(
        f"batch {function}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    ):
        yield


@contextlib.contextmanager
def invoke_span(function: str, trigger: str, carrier: Mapping[str, str] | None = None) -> Any:
    """An invocation span, child of the current span, or of ``carrier``'s context (an
    HTTP request's ``traceparent``) when there is no current one. Yields the span."""
    if not _state["on"]:
        yield None
        return
    from opentelemetry import trace

    parent = None
    if carrier and not trace.get_current_span().get_span_context().is_valid:
        parent = extract_context(carrier)
    with _state["tracer"].start_as_current_span(
        f"invoke {function}",
        context=parent,
        attributes={"faas.name": function, "eventrun.trigger": trigger},
    ) as span:
        sc = span.get_span_context()
        header = traceparent_to_xray(
            f"{sc.trace_id:032x}", f"{sc.span_id:016x}", sc.trace_flags.sampled
        )
        token = TRACE_HEADER.set(header)  # the worker's _X_AMZN_TRACE_ID
        try:
            yield span
        finally:
            TRACE_HEADER.reset(token)


@contextlib.contextmanager
def attached(headers: Any) -> Iterator[None]:
    """Make the context of an incoming request's ``traceparent`` current (no span of
    its own); ``headers`` is an ASGI scope's header list."""
    if not _state["on"]:
        yield
        return
    carrier = {
        k.decode("latin-1").lower(): v.decode("latin-1")
        for k, v in headers
        if k.lower() in (b"traceparent", b"tracestate")
    }
    ctx = extract_context(carrier)
    if ctx is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


@contextlib.contextmanager
def async_span(function: str, meta: Mapping[str, Any]) -> Iterator[None]:
    """A consumer span around one asynchronous invocation taken from the store queue,
    child of the context it was queued in (its ``traceparent`` kept in the entry's meta),
    so its retries, destinations and outputs join the caller's trace."""
    if not _state["on"]:
        yield
        return
    from opentelemetry.trace import SpanKind

    carrier = {k: str(v) for k, v in meta.items() if k in ("traceparent", "tracestate")}
    with _state["tracer"].start_as_current_span(
        f"async {function}",
        context=extract_context(carrier),
        kind=SpanKind.CONSUMER,
        attributes={"faas.name": function, "faas.trigger": "other"},
    ):
        yield


def trace_attributes() -> dict[str, str]:
    """The current context as ``traceparent`` (and ``tracestate``), or {}."""
    if not _state["on"]:
        return {}
    carrier: dict[str, str] = {}
    _state["propagator"].inject(carrier)
    return carrier


def with_trace(messages: Sequence[OutMessage]) -> Sequence[OutMessage]:
    """``messages`` carrying the current trace context (those that have none yet)."""
    if not _state["on"]:
        return messages
    extra = trace_attributes()
    if not extra:
        return messages
    return [
        m
        if "traceparent" in m.attributes
        else OutMessage(m.payload, m.key, {**m.attributes, **extra})
        for m in messages
    ]
