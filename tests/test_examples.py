"""``examples/``: every ``curl`` line of its README, run against a running relay as written (the
headers, the body file, the path), gives the events its table promises, in the file sink."""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

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
