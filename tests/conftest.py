"""Fixtures shared by every test: real peers on loopback and the fixture files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.otlp_peer import running_peer
from tests.helpers.phoenix import Phoenix, phoenix_executable
from tests.helpers.relay import RelayProcess
from tests.helpers.scripted_server import ScriptedServer
from tests.helpers.test_agent import TestAgent, agent_executable

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_json(name: str) -> Any:
    """A fixture file from ``tests/fixtures`` (copied from the project's research, source noted)."""
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session")
def test_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestAgent]:
    executable = agent_executable()
    if executable is None:
        pytest.fail("ddapm-test-agent not found: run the tests through `make test`")
    agent = TestAgent(executable, tmp_path_factory.mktemp("test-agent"))
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """Arize Phoenix as a real OTLP store, started once per session by the tests that use it."""
    executable = phoenix_executable()
    if executable is None:
        pytest.fail("arize-phoenix not found: run the tests through `make test`")
    server = Phoenix(executable, tmp_path_factory.mktemp("phoenix"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def scripted_server() -> AsyncIterator[ScriptedServer]:
    server = await ScriptedServer().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedServer]:
    """A scripted OTLP receiver that takes every export (a test may script its answers)."""
    async with running_peer() as server:
        yield server


@pytest.fixture
async def second_peer() -> AsyncIterator[ScriptedServer]:
    """Another, for a second OTLP sink."""
    async with running_peer() as server:
        yield server


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay subprocess with the file sink, shared by the tests of one module."""
    with RelayProcess(tmp_path_factory.mktemp("relay")) as process:
        yield process
