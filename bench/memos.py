"""What each memo is worth: the bench's events through the relay's per-event pipeline, in process,
with each memo switched off in turn.

``python -m bench.memos [--pairs N]``. For each scenario of ``make bench`` the pipeline is the work
every event costs outside HTTP and SQLite: normalize, processors, JSON for the spool, metrics, the
OTLP sink's encoding and the Datadog sink's. Runs with the memo on and off alternate (the machines
are shared and drift), and the figure is the median of the off/on CPU ratios over the pairs. A memo
stays only where switching it off costs more than a few percent (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Final

import orjson

from bench.payloads import SCENARIOS, build
from foundation import secrets, times
from foundation.memo import Memo
from foundation.times import now
from receiver.normalizers import otlp, otlp_attributes, otoroshi
from receiver.normalizers.base import IngestContext, Normalizer
from receiver.processors import process
from sinks import datadog_format, otlp_spans, otlp_wire
from sinks.datadog_format import SpanFormat, encode_batch
from telemetry import metrics as metrics_module
from telemetry.metrics import Metrics

NORMALIZERS: Final[dict[str, Normalizer]] = {
    "otlp-json": otlp.normalize_json,
    "otlp-proto": otlp.normalize_proto,
    "otoroshi": otoroshi.normalize,
}
DATADOG: Final = SpanFormat(
    mode="agentless",
    ml_app="bench",
    global_tags=(),
    service=None,
    max_span_bytes=1_000_000,
    max_payload_bytes=4_000_000,
)
BATCH: Final = 512


def pipeline(scenario: str, bodies: list[bytes], metrics: Metrics) -> int:
    """Every body through the per-event work; the number of events."""
    normalize = NORMALIZERS[scenario]
    content_type = SCENARIOS[scenario].content_type
    events = []
    for body in bodies:
        received_ns, received_at = now()
        result = normalize(body, IngestContext(received_ns, received_at, content_type))
        process(result.events, None, "full")
        for event in result.events:
            orjson.dumps(event)
        metrics.observe_events(result.events)
        events.extend(result.events)
    for start in range(0, len(events), BATCH):
        otlp_spans.encode_request(events[start : start + BATCH])
        encode_batch(events[start : start + BATCH], DATADOG)
    return len(events)


@contextmanager
def replaced(owner: Any, **values: Any) -> Iterator[None]:
    saved = {name: getattr(owner, name) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owner, name, value)


def _no_children() -> Any:
    return replaced(
        metrics_module._Children,
        __getitem__=lambda self, key: self._metric.labels(*key),
    )


def _no_tag_memo() -> Any:
    llm_span = datadog_format.llm_span
    return replaced(datadog_format, llm_span=lambda event, fmt, memo=None: llm_span(event, fmt))


def _no_secret_memo() -> Any:
    # Imported by name where it is used: switched off in each of those modules.
    plain = secrets.is_secret_key.__wrapped__  # type: ignore[attr-defined]
    from receiver.normalizers import common, native

    return _all(
        replaced(secrets, is_secret_key=plain),
        replaced(common, is_secret_key=plain),
        replaced(native, is_secret_key=plain),
    )


@contextmanager
def _all(*managers: Any) -> Iterator[None]:
    with ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield


# Each memo, how to switch it off, and the scenarios whose events reach it.
MEMOS: Final[dict[str, tuple[Callable[[], Any], tuple[str, ...]]]] = {
    "times: formatting seconds": (
        lambda: replaced(times, _utc_seconds=times._utc_seconds.__wrapped__),  # type: ignore[attr-defined]
        ("otlp-json", "otlp-proto", "otoroshi"),
    ),
    "times: parsing seconds": (
        lambda: replaced(times, _epoch_seconds=times._epoch_seconds.__wrapped__),  # type: ignore[attr-defined]
        ("otlp-json", "otlp-proto", "otoroshi"),
    ),
    "secrets: key names": (_no_secret_memo, ("otlp-json", "otlp-proto", "otoroshi")),
    "otlp: attribute names per span": (
        # An empty memo that takes nothing: the warm one must not answer while switched off.
        lambda: replaced(otlp_attributes, _NAMES_SEEN=Memo(0), _NAMES_SEEN_MAX_NAMES=-1),
        ("otlp-json", "otlp-proto"),
    ),
    "otlp: provider tokens": (
        lambda: replaced(otlp_attributes, _tokenized=otlp_attributes._tokenized.__wrapped__),  # type: ignore[attr-defined]
        ("otlp-json", "otlp-proto"),
    ),
    "otlp: finish reasons": (
        lambda: replaced(
            otlp_attributes,
            _finish_reasons_once=otlp_attributes._finish_reasons_once.__wrapped__,  # type: ignore[attr-defined]
        ),
        ("otlp-json", "otlp-proto"),
    ),
    "otoroshi: flattened strings": (
        lambda: replaced(otoroshi, _MAX_REMEMBERED=-1),
        ("otoroshi",),
    ),
    "otoroshi: enrichment key layouts": (
        lambda: replaced(otoroshi, _ENRICHMENT_BY_LAYOUT=Memo(0), _MAX_LAYOUT_CHARS=-1),
        ("otoroshi",),
    ),
    "otlp_wire: attribute encodings": (
        lambda: replaced(otlp_wire, _MEMO_MAX_CHARS=-1, _MEMO_NUMBERS=frozenset()),
        ("otlp-json", "otlp-proto", "otoroshi"),
    ),
    "datadog: tags per batch": (_no_tag_memo, ("otlp-json", "otlp-proto", "otoroshi")),
    "metrics: label children": (_no_children, ("otlp-json", "otlp-proto", "otoroshi")),
}


def cpu_per_event(scenario: str, bodies: list[bytes], metrics: Metrics) -> float:
    """µs of CPU per event for one pass, after a short warm-up that fills the memos."""
    pipeline(scenario, bodies[:4], metrics)
    gc.collect()
    started = time.process_time()
    events = pipeline(scenario, bodies, metrics)
    return (time.process_time() - started) / events * 1e6


def worth(scenario: str, switch_off: Callable[[], Any], pairs: int) -> tuple[float, float]:
    """(µs per event with the memo, median off/on ratio) over ``pairs`` alternating pairs."""
    per_request = SCENARIOS[scenario].events_per_request
    bodies = (build(scenario, 64) * 100)[: max(8, 1000 // per_request)]
    metrics = Metrics()
    ratios, on = [], []
    for pair in range(pairs):
        figures: dict[bool, float] = {}
        for memo_on in (True, False) if pair % 2 == 0 else (False, True):
            if memo_on:
                figures[True] = cpu_per_event(scenario, bodies, metrics)
            else:
                with switch_off():
                    figures[False] = cpu_per_event(scenario, bodies, metrics)
        ratios.append(figures[False] / figures[True])
        on.append(figures[True])
    return statistics.median(on), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=15, help="on/off pairs per memo (15)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    for scenario in args.scenario or list(SCENARIOS):
        print(scenario, flush=True)
        for name, (switch_off, scenarios) in MEMOS.items():
            if scenario in scenarios:
                on, ratio = worth(scenario, switch_off, args.pairs)
                print(f"  {name:36s} {on:6.1f} µs/event with it, {ratio - 1:+6.1%} without")


if __name__ == "__main__":
    main()
