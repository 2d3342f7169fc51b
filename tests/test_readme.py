"""The README's Configuration section names every environment variable the relay reads.

A variable counts as documented when the README has it whole (`RELAY_PORT`), in its per-sink form
(`RELAY_<SINK>_FILTER` for `RELAY_DATADOG_FILTER`), or as a suffix on a line that names its prefix
(`RELAY_LANGFUSE_HOST` ... `_PUBLIC_KEY`), as the tables write them.
"""

from __future__ import annotations

import re
from pathlib import Path

from service.config import known_variables
from sinks.registry import sink_specs

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SINK_PREFIXES = tuple(f"RELAY_{name.upper()}_" for name in sink_specs())


def documented(name: str) -> bool:
    if re.search(rf"\b{name}\b", README):
        return True
    for prefix in SINK_PREFIXES:
        if name.startswith(prefix) and f"RELAY_<SINK>_{name[len(prefix) :]}" in README:
            return True
    parts = name.split("_")
    for cut in range(2, len(parts)):
        prefix, suffix = "_".join(parts[:cut]) + "_", "_" + "_".join(parts[cut:])
        if any(prefix in line and f"`{suffix}`" in line for line in README.splitlines()):
            return True
    return False


def test_the_rule_can_tell() -> None:
    assert documented("RELAY_PORT") and documented("RELAY_DATADOG_FILTER")
    assert documented("RELAY_LANGFUSE_PUBLIC_KEY")
    assert not documented("RELAY_NO_SUCH_SETTING")
    assert not documented("RELAY_DATADOG_NO_SUCH_SETTING")


def test_every_variable_the_relay_reads_is_in_the_readme() -> None:
    missing = [name for name in sorted(known_variables()) if not documented(name)]
    assert not missing, f"read by the relay, not in the README: {missing}"
