"""Real OpenTelemetry senders, run one per process: ``python -m tests.conformance.otel_clients``.

Each sender is a client package users install, set up as its README says, calling the loopback
fake LLM (``tests.helpers.fake_llm``) and exporting its spans with the OpenTelemetry SDK's OTLP/HTTP
exporter to the relay. Every span the sender made is also kept in memory and written to ``--out``
as JSON: what the client reported, for the test to compare with the relay's events.

An instrumentation patches the OpenAI SDK for the whole process, hence one sender per process.
Every prompt carries ``--nonce`` and the scenario's name, so the test can pair a call, the fake's
record of it, the span and the event.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.conformance import scenarios
from tests.conformance.scenarios import SCENARIOS


def run_openai(llm_url: str, nonce: str, logged: Callable[[], bool]) -> None:
    """The scenarios through the OpenAI SDK, which the sender's instrumentation has patched."""
    scenarios.run_openai(llm_url, nonce)


def instrument_openai_v2(relay_url: str) -> None:
    # The latest GenAI conventions, with content on the span, as its README describes.
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "span_only"
    sdk_provider(relay_url)
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()  # type: ignore[no-untyped-call]


def instrument_openinference(relay_url: str) -> None:
    sdk_provider(relay_url)
    from openinference.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()


def instrument_openllmetry(relay_url: str) -> None:
    sdk_provider(relay_url)
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()


# -- LiteLLM's ``otel`` callback ---------------------------------------------------------------


def run_litellm(llm_url: str, nonce: str, logged: Callable[[], bool]) -> None:
    """The scenarios through LiteLLM with its ``otel`` callback."""
    import litellm

    litellm.callbacks = ["otel"]

    async def calls() -> None:
        await scenarios.run_litellm(litellm, llm_url, nonce)
        # LiteLLM logs each call from tasks on this loop: keep it running until every call's
        # span has been exported (bounded: a missing span fails the test, not this script).
        deadline = time.monotonic() + 60
        while not logged() and time.monotonic() < deadline:  # noqa: ASYNC110 - spans, not an event
            await asyncio.sleep(0.05)

    asyncio.run(calls())


# -- the OpenTelemetry SDK around them ---------------------------------------------------------


def span_record(span: Any) -> dict[str, Any]:
    """A finished SDK span as plain JSON: what the sender reported."""
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
        "resource": dict(span.resource.attributes),
    }


def is_call_span(span: dict[str, Any]) -> bool:
    """Whether an exported span is the sender's record of one LLM call (not a child of it)."""
    attributes = span["attributes"]
    return "gen_ai.operation.name" in attributes or "openinference.span.kind" in attributes


def record_exports() -> tuple[list[dict[str, Any]], list[str]]:
    """Every span the SDK's OTLP/HTTP exporter sends from now on, in this process: each as JSON,
    and each request body (protobuf, base64) as the exporter encodes it.

    Wrapping the exporter (rather than adding a processor) also sees the spans of a sender that
    builds its own provider, as LiteLLM does: exactly what went to the relay.
    """
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exported: list[dict[str, Any]] = []
    bodies: list[str] = []
    send = OTLPSpanExporter.export

    def export(self: OTLPSpanExporter, spans: Any) -> Any:
        exported.extend(span_record(span) for span in spans)
        bodies.append(base64.b64encode(encode_spans(spans).SerializeToString()).decode())
        return send(self, spans)

    OTLPSpanExporter.export = export  # type: ignore[method-assign]
    return exported, bodies


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("sender", choices=sorted(SENDERS))
    parser.add_argument("--llm", required=True, help="the fake LLM's base URL")
    parser.add_argument("--relay", required=True, help="the relay's base URL")
    parser.add_argument("--nonce", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    from opentelemetry import trace

    exported, bodies = record_exports()
    setup, run = SENDERS[args.sender]
    setup(args.relay)

    def logged() -> bool:
        trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
        return sum(map(is_call_span, exported)) >= len(SCENARIOS)

    run(args.llm, args.nonce, logged)
    logged()
    report = {"spans": exported, "bodies": bodies}
    args.out.write_bytes(orjson.dumps(report, default=str))
    return 0


def run_sender(sender: str, llm_url: str, relay_url: str, nonce: str, out: Path) -> list[Any]:
    """Run one sender's calls in a process of its own (what ``main`` does there); the spans it
    exported, as it reported them."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.conformance.otel_clients", sender,
         "--llm", llm_url, "--relay", relay_url, "--nonce", nonce, "--out", str(out)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    spans: list[Any] = orjson.loads(out.read_bytes())["spans"]
    return spans


def sdk_provider(relay_url: str) -> None:
    """The OpenTelemetry SDK with its OTLP/HTTP exporter, as the instrumentations' READMEs set it
    up (a batch processor, so that several spans share a request)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "conformance-app"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=relay_url + "/v1/traces"))
    )
    trace.set_tracer_provider(provider)


def litellm_environment(relay_url: str) -> None:
    """As LiteLLM's docs set up its ``otel`` callback: the exporter from the environment."""
    os.environ.update({"OTEL_EXPORTER": "otlp_http", "OTEL_ENDPOINT": relay_url + "/v1/traces"})
    # LiteLLM fetches its price table from GitHub at import unless told not to: loopback only.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"


SENDERS: dict[str, tuple[Callable[[str], None], Callable[[str, str, Callable[[], bool]], None]]] = {
    "openai-v2": (instrument_openai_v2, run_openai),
    "openinference": (instrument_openinference, run_openai),
    "openllmetry": (instrument_openllmetry, run_openai),
    "litellm-otel": (litellm_environment, run_litellm),
}

if __name__ == "__main__":
    sys.exit(main())
