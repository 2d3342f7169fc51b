"""Post one example body to a running relay, its times moved to now.

    python3 examples/send.py otoroshi-batch.json
    python3 examples/send.py openrouter-trace.json --url http://localhost:4318 --token <token>

The bodies keep the times of their captures. The file sink takes any time, but a trace store
searched by time (Tempo, Phoenix) shows them at those dates and Datadog drops spans that old: this
moves every time in the body by the same whole number of seconds, so that the latest is now and
durations stay as captured. Python's standard library only: it runs without the relay's venv.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Where each example goes, its extra headers, and the keys holding its times, with their unit.
ROUTES: dict[str, tuple[str, dict[str, str]]] = {
    "native-event.json": ("/v1/events", {}),
    "openrouter-trace.json": ("/v1/traces", {}),
    "openrouter-test-connection.json": ("/v1/traces", {"X-Test-Connection": "true"}),
    "otoroshi-batch.json": ("/v1/webhooks/otoroshi", {}),
    "litellm-batch.json": ("/v1/webhooks/litellm", {}),
}
SCALES = {"ns": 1_000_000_000, "ms": 1000, "s": 1}
TIME_KEYS: dict[str, str] = {
    "startTimeUnixNano": "ns",  # OTLP
    "endTimeUnixNano": "ns",
    "timeUnixNano": "ns",
    "@timestamp": "ms",  # Otoroshi
    "startTime": "s",  # LiteLLM
    "endTime": "s",
    "completionStartTime": "s",
    "start_time": "rfc3339",  # the relay's own schema
    "end_time": "rfc3339",
    "received_at": "rfc3339",
}
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(.*)")


def _times(value: Any) -> list[tuple[dict[str, Any], str]]:
    """Every (object, key) in ``value`` whose key holds a time."""
    found: list[tuple[dict[str, Any], str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TIME_KEYS and item is not None:
                found.append((value, key))
            else:
                found.extend(_times(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_times(item))
    return found


def _seconds(value: Any, unit: str) -> float:
    if unit == "rfc3339":
        match = _RFC3339.match(str(value))
        if match is None:
            raise ValueError(f"not an RFC 3339 time: {value!r}")
        return datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC).timestamp()
    return float(value) / SCALES[unit]


def _moved(value: Any, unit: str, seconds: int) -> Any:
    if unit == "rfc3339":
        match = _RFC3339.match(str(value))
        assert match is not None
        moved = datetime.fromisoformat(match.group(1)) + timedelta(seconds=seconds)
        return moved.strftime("%Y-%m-%dT%H:%M:%S") + match.group(2)  # the fraction kept as sent
    if isinstance(value, str):  # OTLP/JSON writes 64-bit integers as strings
        return str(int(value) + seconds * SCALES[unit])
    return value + seconds * SCALES[unit]


def now_dated(body: Any) -> Any:
    """``body`` with every time moved by the whole seconds that make the latest one now."""
    places = _times(body)
    if places:
        latest = max(_seconds(obj[key], TIME_KEYS[key]) for obj, key in places)
        seconds = int(time.time() - latest)
        for obj, key in places:
            obj[key] = _moved(obj[key], TIME_KEYS[key], seconds)
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("example", choices=sorted(ROUTES), help="a body in examples/")
    parser.add_argument("--url", default="http://localhost:4318", help="the relay")
    parser.add_argument("--token", help="one of RELAY_INGEST_TOKENS, when it is set")
    args = parser.parse_args(argv)
    path, headers = ROUTES[args.example]
    body = now_dated(json.loads((HERE / args.example).read_text()))
    headers = {"Content-Type": "application/json", **headers}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    request = urllib.request.Request(
        args.url.rstrip("/") + path, json.dumps(body).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            print(answer.status, answer.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as error:
        print(error.code, error.read().decode(errors="replace"), file=sys.stderr)
    except OSError as error:
        print(f"cannot reach {args.url}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
