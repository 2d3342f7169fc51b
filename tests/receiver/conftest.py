"""A relay subprocess with the file sink, shared by the receiver tests of one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.relay import RelayProcess


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path_factory.mktemp("relay")) as process:
        yield process
