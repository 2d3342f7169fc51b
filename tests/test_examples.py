"""``examples/``: every ``curl`` line of its README, run against a running relay as written (the
headers, the body file, the path), gives the events its table promises, in the file sink."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from foundation.times import unix_ns
from tests.helpers.relay import RelayProcess
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "examples" / "README.md").read_text()
CURLS = [line for line in README.splitlines() if line.startswith("curl ")]
PROMISED = {
    name: int(count)
    for name, count in re.findall(r"^\| `([\w.-]+\.json)` \| .* \| (\d+) \|$", README, re.M)
}


def request_of(line: str) -> tuple[str, dict[str, str], Path]:
    """The path, headers and body file of one ``curl`` line."""
    words = shlex.split(line)
    headers = {}
    body = None
    for flag, value in itertools.pairwise(words):
        if flag == "-H":
            name, _, text = value.partition(":")
            headers[name.strip()] = text.strip()
        elif flag == "--data-binary":
            body = ROOT / value.removeprefix("@")
    path = "/" + words[-1].split("/", 1)[1]
    assert body is not None, line
    return path, headers, body


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path_factory.mktemp("relay")) as process:
        yield process


def test_the_readme_lists_every_example_once() -> None:
    files = sorted(p.name for p in (ROOT / "examples").glob("*.json"))
    assert sorted(request_of(line)[2].name for line in CURLS) == files
    assert sorted(PROMISED) == files


@pytest.mark.parametrize("line", CURLS, ids=lambda line: request_of(line)[2].name)
def test_each_example_posts_and_gives_its_events(relay: RelayProcess, line: str) -> None:
    path, headers, body = request_of(line)
    before = len(relay.events())
    answer = relay.request("POST", path, body.read_bytes(), headers)
    assert answer.status == 200, answer.data
    promised = PROMISED[body.name]
    # Then the native example: once its two events are written, anything the first post gave
    # would have been written before them (one spool, in order).
    native = ROOT / "examples" / "native-event.json"
    relay.request("POST", "/v1/events", native.read_bytes(), {"Content-Type": "application/json"})
    expected = before + promised + PROMISED[native.name]
    wait_until(lambda: len(relay.events()) >= expected, message=f"{expected} events written")
    assert len(relay.events()) == expected


@pytest.mark.parametrize("name", sorted(PROMISED))
def test_send_py_posts_each_example_with_its_times_moved_to_now(
    relay: RelayProcess, name: str
) -> None:
    """``examples/send.py`` posts the same events as the ``curl`` line, each ending within a
    minute of now and lasting as long as in the body as captured."""
    as_captured = by_trace(post_and_read(relay, lambda: post_raw(relay, name), name))
    started = time.time()
    moved = by_trace(post_and_read(relay, lambda: send_py(relay, name), name))
    assert sorted(moved) == sorted(as_captured)
    for key, event in moved.items():
        end = unix_ns(event["end_time"]) / 1e9
        assert started - 60 < end <= time.time() + 1, (key, event["end_time"])
        captured = as_captured[key]
        assert duration_ns(event) == duration_ns(captured), key
        if "ttft_ms" in captured:
            assert event["ttft_ms"] == captured["ttft_ms"]


def send_py(relay: RelayProcess, name: str) -> None:
    result = subprocess.run(
        [sys.executable, "examples/send.py", name, "--url", relay.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("200 "), result.stdout


def post_raw(relay: RelayProcess, name: str) -> None:
    (line,) = [line for line in CURLS if request_of(line)[2].name == name]
    path, headers, body = request_of(line)
    assert relay.request("POST", path, body.read_bytes(), headers).status == 200


def post_and_read(relay: RelayProcess, post: Callable[[], None], name: str) -> list[dict[str, Any]]:
    """The events of one post of ``name``, as the file sink wrote them: the native example
    posted after it marks where they end."""
    before = len(relay.events())
    post()
    native = ROOT / "examples" / "native-event.json"
    relay.request("POST", "/v1/events", native.read_bytes(), {"Content-Type": "application/json"})
    expected = before + PROMISED[name] + PROMISED[native.name]
    wait_until(lambda: len(relay.events()) >= expected, message=f"{expected} events written")
    return relay.events()[before : before + PROMISED[name]]


def by_trace(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Events by what stays the same across posts: their ids in the body as sent."""
    keyed = {f"{e.get('trace_id')}/{e.get('span_id')}/{e.get('event_id')}": e for e in events}
    assert len(keyed) == len(events), "two events of one body share their ids"
    return keyed


def duration_ns(event: dict[str, Any]) -> int:
    return unix_ns(event["end_time"]) - unix_ns(event["start_time"])
