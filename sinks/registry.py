"""The sinks the relay knows, by the name used in ``RELAY_SINKS``: one table, built in one place,
as the Collector's generated ``components.go`` is.

A new sink is a module with a ``SPEC`` and an entry here; a new OTLP destination is a ``Preset`` in
``sinks.otlp_presets`` and needs nothing here.
"""

from __future__ import annotations

from typing import Final

from sinks import datadog, file, otlp
from sinks.otlp_presets import PRESETS
from sinks.spec import SinkSpec

SPECS: Final[dict[str, SinkSpec]] = {
    spec.name: spec
    for spec in (
        file.SPEC,
        otlp.SPEC,
        *(otlp.preset_spec(preset) for preset in PRESETS),
        datadog.SPEC,
    )
}


def sink_specs() -> dict[str, SinkSpec]:
    """Every sink spec by name (a copy: the table itself is changed only here, and by tests)."""
    return dict(SPECS)
