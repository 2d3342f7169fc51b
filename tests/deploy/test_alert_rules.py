"""``promtool test rules`` on what a real relay exports: every alert in
``deploy/prometheus/alerts.yml`` fires on the trouble it is for and stays silent without it, and the
dashboard's token queries add up to the tokens of the events posted.

One relay is started for the module, with the file sink and an OTLP sink whose peer is not there
(and ``MAX_RETRY_TIME=0``): it is scraped before anything happens, then again after one request of
512 events (all dead-lettered by the OTLP sink at once, a first burst) and one malformed request.
The series promtool reads are built from those scrapes: their names, label sets and values where
the relay can produce them for real (dead letters, rejections, tokens, cost, errors), and values
over time written here where only time can (a day of spend, an hour of a stalled sink). A metric
renamed, a label dropped or a counter no longer exported at 0 breaks the cases that use it.

Annotations are checked elsewhere (``test_deploy``); promtool compares them too, so the rules are
run here from a copy without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.test_deploy import (
    ALERTS,
    PROMETHEUS,
    alert_rules,
    dashboard_panels,
    dashboard_promql,
    grafana_to_promql,
    metric_names,
    one_document,
)
from tests.helpers.payloads import native_event
from tests.helpers.ports import free_port
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")

Labels = frozenset[tuple[str, str]]
Scrape = dict[str, dict[Labels, float]]
Values = list[float | None]  # one sample a minute; None: no sample

BURST = 512  # one request's events, dead-lettered in one batch (the OTLP sinks' batch size)
SINKS = ("file", "otlp")


def _target() -> dict[str, str]:
    """The labels Prometheus adds to every series it scrapes from the relay."""
    (job,) = [j for j in one_document(PROMETHEUS)["scrape_configs"] if "relay" in j["job_name"]]
    (static,) = job["static_configs"]
    return {"job": job["job_name"], "instance": static["targets"][0], **static.get("labels", {})}


TARGET = _target()


# -- the relay, scraped before and after ------------------------------------------------------


def llm_event(**fields: Any) -> dict[str, Any]:
    gateway = {"source": {"gateway": "alert-tests", "test": False}}
    return native_event("alert-rules", **(gateway | fields))


def priced(model: str, provider: str, cost: float, **usage: int) -> dict[str, Any]:
    gateway_cost = {"total": cost, "currency": "USD", "source": "gateway"}
    return llm_event(
        request_model=model, provider=provider, upstream=provider, usage=usage, cost=gateway_cost
    )


# Calls with cached and reasoning tokens, which are counted inside input and output, not on top.
TOKEN_EVENTS = [
    priced(
        "gpt-4o",
        "openai",
        0.02,
        input_tokens=1200,
        output_tokens=300,
        cache_read_input_tokens=1024,
        cache_write_input_tokens=64,
        reasoning_output_tokens=120,
    ),
    priced(
        "gpt-4o", "openai", 0.01, input_tokens=800, output_tokens=150, cache_read_input_tokens=512
    ),
    priced(
        "claude-sonnet-4",
        "anthropic",
        0.005,
        input_tokens=400,
        output_tokens=90,
        cache_write_input_tokens=200,
        reasoning_output_tokens=40,
    ),
]
ERROR_EVENT = llm_event(
    request_model="gpt-4o",
    provider="openai",
    upstream="openai",
    status="error",
    error={"type": "RateLimitError", "message": "Rate limit reached", "http_status": 429},
)


@dataclass(frozen=True)
class Scrapes:
    before: Scrape
    after: Scrape
    scraped_at: float  # the wall-clock time of the second scrape


def scrape(relay: RelayProcess) -> Scrape:
    samples: Scrape = {}
    text = relay.request("GET", "/metrics").data.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> Scrapes:
    env = {
        "RELAY_SINKS": ",".join(SINKS),
        "RELAY_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces",  # nothing listens
        "RELAY_OTLP_MAX_RETRY_TIME": "0",  # the first failure dead-letters the batch
        "RELAY_OTLP_FLUSH_INTERVAL": "0.05",
    }
    # Setup-check events (source.test) fill the burst: delivered, kept out of the LLM metrics.
    fillers = [
        llm_event(source={"gateway": "alert-tests", "test": True})
        for _ in range(BURST - len(TOKEN_EVENTS) - 1)
    ]
    with RelayProcess(tmp_path_factory.mktemp("alert-rules"), env) as relay:
        before = scrape(relay)
        body = orjson.dumps([*TOKEN_EVENTS, ERROR_EVENT, *fillers])
        answer = relay.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
        assert orjson.loads(answer.data)["accepted"] == BURST, answer.data
        assert relay.request("POST", "/v1/events", b"{not json").status == 400

        def settled() -> bool:
            sinks = relay.get_json("/v1/status")["sinks"]
            return bool(sinks["otlp"]["dead_lettered"] == BURST and sinks["file"]["sent"] == BURST)

        wait_until(settled, message="the burst delivered to the file and dead-lettered by otlp")
        return Scrapes(before, scrape(relay), time.time())


def pick(samples: Scrape, name: str, **labels: str) -> Labels:
    """The one label set of ``name`` with these labels."""
    found = [key for key in samples.get(name, {}) if set(labels.items()) <= key]
    assert len(found) == 1, f"{name}{labels}: {found} in the relay's /metrics"
    return found[0]


# -- promtool ----------------------------------------------------------------------------------


@dataclass
class Case:
    """One promtool test group: series (one sample every ``interval`` minutes, and the rules
    evaluated as often) and what the alert does at the end."""

    series: dict[str, Values] = field(default_factory=dict)
    samples: int = 0
    # A case spanning a week samples every 30 minutes: promtool evaluates every rule at each
    # step, and a week of minutes takes it minutes.
    interval: int = 1
    # The alert's labels, besides alertname and severity (one dict per alert expected).
    firing: dict[str, str] | list[dict[str, str]] | None = None

    def add(
        self, name: str, labels: Labels, values: Values, target: Mapping[str, str] = TARGET
    ) -> None:
        """A series of ``name`` as Prometheus stores it: with the labels its scrape adds."""
        merged = dict(labels) | dict(target)
        selector = ",".join(f'{k}="{v}"' for k, v in sorted(merged.items()))
        self.series[f"{name}{{{selector}}}"] = values
        self.samples = max(self.samples, len(values) - 1)


def values_text(values: Values) -> str:
    return " ".join("_" if v is None else repr(float(v)) for v in values)


def run_promtool(tmp_path: Path, groups: list[dict[str, Any]], interval: int = 1) -> None:
    rules = one_document(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": f"{interval}m", "tests": groups}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        ["promtool", "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def alert_group(alert: str, case: Case) -> dict[str, Any]:
    (rule,) = [r for r in alert_rules() if r.get("alert") == alert]
    firing = [case.firing] if isinstance(case.firing, dict) else case.firing or []
    severity = {"severity": rule["labels"]["severity"]}
    expected = [{"exp_labels": labels | severity} for labels in firing]
    end = f"{case.samples * case.interval}m"
    return {
        "interval": f"{case.interval}m",
        "input_series": [{"series": s, "values": values_text(v)} for s, v in case.series.items()],
        "alert_rule_test": [{"eval_time": end, "alertname": alert, "exp_alerts": expected}],
    }


# -- the alerts: one builder per alert, for its firing case and its silent one ------------------


def steady(value: float | None, minutes: int) -> Values:
    return [value] * (minutes + 1)


def step(before: float | None, after: float | None, at: int, minutes: int) -> Values:
    """``before`` until minute ``at``, then ``after``: a counter's burst."""
    return [before] * at + [after] * (minutes + 1 - at)


def ramp(per_minute: float, minutes: int, start: float = 0.0) -> Values:
    return [start + per_minute * i for i in range(minutes + 1)]


def instance(**labels: str) -> dict[str, str]:
    return {"instance": TARGET["instance"], **labels}


def dead_lettered(s: Scrapes, fires: bool) -> Case:
    """A first burst of dead letters, on the series the relay exported since its start."""
    name, case = "relay_sink_dead_lettered_events_total", Case()
    burst = pick(s.after, name, sink="otlp", reason="retries_exhausted")
    assert s.after[name][burst] == BURST
    exported = s.before.get(name, {})
    for labels in {*exported, burst}:
        before = exported.get(labels)  # None: not exported before the first dead letter
        case.add(name, labels, step(before, s.after[name][labels] if fires else before, 5, 8))
    case.firing = instance(sink="otlp", reason="retries_exhausted") if fires else None
    return case


def spend(s: Scrapes, fires: bool) -> Case:
    """A day at 0.5 USD an hour, then an hour at 5 USD an hour (or still 0.5)."""
    name, case = "llm_cost_usd_total", Case()
    labels = pick(s.after, name, model="gpt-4o")
    start = s.after[name][labels]
    day = ramp(0.5 / 60, 24 * 60, start)
    hour = ramp((5.0 if fires else 0.5) / 60, 60, start + 0.5 * 24)[1:]
    case.add(name, labels, day + hour)
    case.firing = {"gateway": dict(labels)["gateway"]} if fires else None
    return case


def upstream_errors(s: Scrapes, fires: bool) -> Case:
    """One failed call a minute, among 10 calls (or among 100)."""
    case = Case()
    ok = pick(s.after, "llm_requests_total", model="gpt-4o", upstream="openai", status="ok")
    failed = pick(s.after, "llm_requests_total", upstream="openai", status="error")
    errors = pick(s.after, "llm_errors_total", upstream="openai")
    for name, labels, per_minute in (
        ("llm_requests_total", ok, 9 if fires else 99),
        ("llm_requests_total", failed, 1),
        ("llm_errors_total", errors, 1),
    ):
        case.add(name, labels, ramp(per_minute, 25, s.after[name][labels]))
    gateway = dict(errors)["gateway"]
    case.firing = {"gateway": gateway, "upstream": "openai"} if fires else None
    return case


WEEK = 7 * 24 * 2  # half hours


def routing_drift(s: Scrapes, fires: bool) -> Case:
    """A week of gpt-4o calls, 9 a minute served by openai and 1 by a second upstream, then an
    hour in which the second serves 7 of every 10 (or the same 1 in 10 as before); a sample
    every half hour."""
    name, case = "llm_requests_total", Case(interval=30)
    openai = pick(s.after, name, model="gpt-4o", upstream="openai", status="ok")
    # The same series with another upstream: the label set a real relay exports, one value moved.
    azure = frozenset((k, "azure" if k == "upstream" else v) for k, v in openai)
    start = s.after[name][openai]
    for labels, week, hour in ((openai, 9, 3 if fires else 9), (azure, 1, 7 if fires else 1)):
        before = ramp(week * 30, WEEK, start)
        case.add(name, labels, before + ramp(hour * 30, 2, before[-1] or 0.0)[1:])
    gateway = dict(openai)["gateway"]
    firing = [{"gateway": gateway, "model": "gpt-4o", "upstream": u} for u in ("azure", "openai")]
    case.firing = firing if fires else None
    return case


def gateway_silent(s: Scrapes, fires: bool) -> Case:
    """Events every minute for ten minutes, then none: the relay still exports the last time for
    half an hour, then restarts and exports nothing for it (or events every minute throughout)."""
    name, case = "relay_last_event_timestamp_seconds", Case()
    labels = pick(s.after, name, gateway="alert-tests")
    assert name not in s.before  # exported from a gateway's first event on
    assert abs(s.after[name][labels] - s.scraped_at) < 60, "not the time of the events"
    minutes = 80
    sending: Values = [60.0 * i for i in range(11)]
    last = sending + [600.0] * 30 + [None] * (minutes - 40) if fires else ramp(60, minutes)
    case.add(name, labels, last)
    case.firing = {"gateway": "alert-tests"} if fires else None
    return case


# The relay's pod as the annotation-based scrape of the prometheus-community chart labels it: job
# "kubernetes-pods", the pod's labels copied (app.kubernetes.io/name becomes this label).
POD = {
    "job": "kubernetes-pods",
    "instance": "10.1.2.3:4318",
    "namespace": "llm",
    "pod": "llm-broadcast-relay-0",
    "app_kubernetes_io_name": "llm-broadcast-relay",
}


def relay_down(s: Scrapes, fires: bool) -> Case:
    """The compose stack's target and a Kubernetes pod, both down (or both up)."""
    case = Case()
    case.add("up", frozenset(), step(1, 0 if fires else 1, 3, 8))
    case.add("up", frozenset(), step(1, 0 if fires else 1, 3, 8), target=POD)
    case.firing = [dict(TARGET), POD] if fires else None
    return case


def delivery_stalled(s: Scrapes, fires: bool) -> Case:
    """The oldest pending event a minute older each minute (or none pending)."""
    name, case = "relay_sink_oldest_pending_age_seconds", Case()
    labels = pick(s.before, name, sink="otlp")
    case.add(name, labels, ramp(60, 18) if fires else steady(s.before[name][labels], 18))
    case.firing = instance(sink="otlp") if fires else None
    return case


def spool_problem(s: Scrapes, fires: bool) -> Case:
    name, case = "relay_spool_problems_total", Case()
    for labels, before in s.before[name].items():
        after = before + 1 if fires and ("problem", "damaged") in labels else before
        case.add(name, labels, step(before, after, 5, 6))
    case.firing = instance(problem="damaged") if fires else None
    return case


def spool_nearly_full(s: Scrapes, fires: bool) -> Case:
    case = Case()
    cap = pick(s.before, "relay_spool_max_bytes")
    used = pick(s.after, "relay_spool_bytes")
    capacity = s.before["relay_spool_max_bytes"][cap]
    case.add("relay_spool_max_bytes", cap, steady(capacity, 7))
    stored = 0.9 * capacity if fires else s.after["relay_spool_bytes"][used]
    case.add("relay_spool_bytes", used, steady(stored, 7))
    case.firing = instance() if fires else None
    return case


def ingest_refused(s: Scrapes, fires: bool) -> Case:
    """Three 503 answers, on the series the relay exported since its start."""
    name, case = "relay_items_rejected_total", Case()
    labels = pick(s.before, name, route="events", reason="unavailable")
    before = s.before[name][labels]
    case.add(name, labels, step(before, before + 3 if fires else before, 3, 5))
    case.firing = instance(route="events") if fires else None
    return case


def ingest_rejected(s: Scrapes, fires: bool) -> Case:
    """The malformed request the relay refused for real."""
    name, case = "relay_items_rejected_total", Case()
    malformed = pick(s.after, name, route="events", reason="malformed")
    exported = s.before.get(name, {})
    for labels in {*exported, malformed}:
        before = exported.get(labels)
        case.add(name, labels, step(before, s.after[name][labels] if fires else before, 3, 10))
    case.firing = instance(route="events", reason="malformed") if fires else None
    return case


ALERT_CASES: dict[str, Callable[[Scrapes, bool], Case]] = {
    "LLMSpendSpike": spend,
    "LLMRoutingDrift": routing_drift,
    "LLMUpstreamErrorRateHigh": upstream_errors,
    "LLMGatewaySilent": gateway_silent,
    "RelayDown": relay_down,
    "RelaySinkDeliveryStalled": delivery_stalled,
    "RelaySinkDeadLettered": dead_lettered,
    "RelaySpoolProblem": spool_problem,
    "RelaySpoolNearlyFull": spool_nearly_full,
    "RelayIngestRefused": ingest_refused,
    "RelayIngestRejected": ingest_rejected,
}


def test_every_alert_has_its_cases() -> None:
    assert set(ALERT_CASES) == {rule["alert"] for rule in alert_rules() if "alert" in rule}


@pytest.mark.parametrize("fires", [True, False], ids=["fires", "silent"])
@pytest.mark.parametrize("alert", sorted(ALERT_CASES))
def test_alert(scrapes: Scrapes, tmp_path: Path, alert: str, fires: bool) -> None:
    case = ALERT_CASES[alert](scrapes, fires)
    run_promtool(tmp_path, [alert_group(alert, case)], case.interval)


# -- the dashboard's token queries --------------------------------------------------------------

MINUTES = 10  # the posted events' counts, again every minute, for this long
TOKEN_FIELDS = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_input_tokens",
    "cache_write": "cache_write_input_tokens",
    "reasoning": "reasoning_output_tokens",
}


def event_label(event: dict[str, Any], label: str, kind: str) -> str:
    values: dict[str, str] = {
        "type": kind,
        "model": event["request_model"],
        "gateway": event["source"]["gateway"],
        "provider": event["provider"],
        "upstream": event["upstream"],
    }
    return values[label]


def expected_tokens(expr: str) -> list[dict[str, Any]]:
    """What a token query must show for TOKEN_EVENTS: by type, each kind's own count; otherwise
    input plus output only (cached and reasoning tokens are inside them). ``60 * rate`` is a
    minute's worth, ``increase`` over the range all ``MINUTES``."""
    grouping = re.search(r"\bsum\s+by\s*\(([^()]*)\)", expr)
    labels = [label.strip() for label in grouping.group(1).split(",")] if grouping else []
    if re.match(r"\s*60\s*\*", expr) and "rate(" in expr:
        factor = 1
    elif "increase(" in expr and "$__range" in expr:
        factor = MINUTES
    else:
        raise AssertionError(f"a token query of a shape this test does not know: {expr}")
    kinds = TOKEN_FIELDS if "type" in labels else {k: TOKEN_FIELDS[k] for k in ("input", "output")}
    sums: dict[tuple[tuple[str, str], ...], int] = {}
    for event in TOKEN_EVENTS:
        for kind, usage_field in kinds.items():
            if count := event["usage"].get(usage_field):
                key = tuple((label, event_label(event, label, kind)) for label in labels)
                sums[key] = sums.get(key, 0) + count * factor
    return [
        {"labels": "{" + ",".join(f'{k}="{v}"' for k, v in key) + "}", "value": value}
        for key, value in sums.items()
    ]


def test_dashboard_token_queries_count_input_and_output_once(
    scrapes: Scrapes, tmp_path: Path
) -> None:
    name, case = "llm_tokens_total", Case()
    for labels, count in scrapes.after[name].items():
        case.add(name, labels, ramp(count, MINUTES))
    queries = [(where, e) for where, e in dashboard_promql() if name in metric_names(e)]
    assert len(queries) >= 2, "the dashboard has no token panels"
    group = {
        "interval": "1m",
        "input_series": [{"series": s, "values": values_text(v)} for s, v in case.series.items()],
        "promql_expr_test": [
            {
                # rate() is exact only to the last bit; the counts are whole tokens
                "expr": f"round({grafana_to_promql(expr)})",
                "eval_time": f"{MINUTES}m",
                "exp_samples": expected_tokens(expr),
            }
            for _, expr in queries
        ],
    }
    run_promtool(tmp_path, [group])


def test_stacked_token_panels_stack_only_input_and_output() -> None:
    """A panel stacking tokens by type must not pile the parts (cached, reasoning) on the whole."""
    parts = ("cache_read", "cache_write", "reasoning")
    for panel in dashboard_panels():
        exprs = [t.get("expr", "") for t in panel.get("targets", [])]
        by_type = any("llm_tokens_total" in e and re.search(r"by\s*\(type\)", e) for e in exprs)
        stacking = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        if not by_type or stacking.get("stacking", {}).get("mode", "none") == "none":
            continue
        unstacked = [
            override["matcher"]["options"]
            for override in panel["fieldConfig"].get("overrides", [])
            if override["matcher"]["id"] == "byRegexp"
            and {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}}
            in override["properties"]
        ]
        for part in parts:
            assert any(re.fullmatch(o, part) for o in unstacked), f"{panel['title']}: {part}"
