"""Capture what each real OTLP sender sends, as fixtures a replay needs no client for.

``python -m tests.conformance.capture`` runs every sender of ``otel_clients`` against the fake LLM
and a relay, as the conformance tests do, and writes ``tests/fixtures/otlp-<sender>-captured.json``:
the exact OTLP request bodies the sender's exporter encoded (protobuf, base64), the spans as it
reported them, and the fake's record of each call. ``test_otel_senders`` replays them through the
relay with the same checks as the live senders, so a change that breaks a sender's mapping fails
even where the clients are not installed, and anyone can post the bodies to a relay of their own.

Machine paths (in exception stack traces) are replaced by placeholders before anything is written.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import site
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conformance.otel_clients import SENDERS
from tests.helpers.fake_llm import FakeLLM
from tests.helpers.relay import ROOT, RelayProcess

FIXTURES = ROOT / "tests" / "fixtures"
PACKAGES = (
    "openai",
    "litellm",
    "openinference-instrumentation-openai",
    "opentelemetry-instrumentation-openai",
    "opentelemetry-instrumentation-openai-v2",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
)


def fixture_path(sender: str) -> Path:
    return FIXTURES / f"otlp-{sender}-captured.json"


def _machine_paths() -> list[tuple[str, str]]:
    """Local directories as they appear in stack traces, longest first, with their stand-ins."""
    found = {sysconfig.get_paths()["purelib"]: "<site-packages>", str(ROOT): "<repo>"}
    found.update(dict.fromkeys(site.getsitepackages(), "<site-packages>"))
    found[sys.prefix] = "<venv>"
    return sorted(found.items(), key=lambda item: -len(item[0]))


def scrub(value: Any, paths: list[tuple[str, str]]) -> Any:
    """``value`` with every machine path replaced, at any depth."""
    if isinstance(value, str):
        for path, stand_in in paths:
            value = value.replace(path, stand_in)
        return value
    if isinstance(value, dict):
        return {key: scrub(item, paths) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item, paths) for item in value]
    return value


def scrub_body(encoded: str, paths: list[tuple[str, str]]) -> str:
    """A base64 protobuf export request with machine paths replaced in its string values."""
    request = ExportTraceServiceRequest.FromString(base64.b64decode(encoded))
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                _scrub_attributes(span.attributes, paths)
                for event in span.events:
                    _scrub_attributes(event.attributes, paths)
    return base64.b64encode(request.SerializeToString()).decode()


def _scrub_attributes(attributes: Any, paths: list[tuple[str, str]]) -> None:
    for attribute in attributes:
        if attribute.value.WhichOneof("value") == "string_value":
            attribute.value.string_value = scrub(attribute.value.string_value, paths)


def capture(sender: str, work: Path) -> dict[str, Any]:
    nonce = uuid.uuid4().hex[:10]
    out = work / f"{sender}.json"
    with FakeLLM() as llm, RelayProcess(work / sender) as relay:
        subprocess.run(
            [sys.executable, "-m", "tests.conformance.otel_clients", sender,
             "--llm", llm.url, "--relay", relay.url, "--nonce", nonce, "--out", str(out)],
            cwd=ROOT, check=True, timeout=240,
        )  # fmt: skip
        exchanges = [{**asdict(exchange), "headers": {}} for exchange in llm.exchanges]
    report = orjson.loads(out.read_bytes())
    paths = _machine_paths()
    return {
        "_source": "captured with `python -m tests.conformance.capture`: the sender's own OTLP "
        "request bodies (protobuf, base64), its spans, and the fake LLM's record of each call",
        "sender": sender,
        "versions": {name: importlib.metadata.version(name) for name in PACKAGES},
        "nonce": nonce,
        "exchanges": exchanges,
        "spans": scrub(report["spans"], paths),
        "bodies": [scrub_body(body, paths) for body in report["bodies"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("senders", nargs="*", default=sorted(SENDERS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for sender in args.senders:
            captured = capture(sender, Path(work))
            fixture_path(sender).write_bytes(orjson.dumps(captured, option=orjson.OPT_INDENT_2))
            print(f"{fixture_path(sender).relative_to(ROOT)}: {len(captured['bodies'])} bodies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
