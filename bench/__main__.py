"""``python -m bench``: load the relay (durable spool, file + Tempo + Datadog sinks) on loopback.

For each scenario: the same load against a null receiver (the ceiling), then against the relay;
events/s accepted and delivered to every sink, p50/p99 acknowledgement latency, peak RSS, CPU
seconds per 1,000 events, each also as a ratio to the null receiver. Then the overload figures
(``bench.overload``): the worst ``/livez`` latency while the largest body of each format is
processed, and ``/metrics`` after 20,000 distinct model names. ``--soak`` instead runs every
scenario at once for five minutes and reports the relay's memory over time.

Everything is bounded in count and time, talks to 127.0.0.1 only, and stops what it started.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import asdict, replace
from typing import Any

import orjson

from bench import report
from bench.overload import OverloadSettings, run_overload
from bench.payloads import SCENARIOS
from bench.runner import Settings, log, run_scenario, run_soak

DEFAULT_SECONDS = 20.0
QUICK_SECONDS = 2.0
SOAK_SECONDS = 300.0
# The soak paces its load below what the relay delivers on one core (see BENCHMARKS.md): memory is
# judged at a steady state, not while the spool grows without bound.
SOAK_RATE = 1200.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: all three)",
    )
    parser.add_argument("--seconds", type=float, help="load time per run (default 20; quick 2)")
    parser.add_argument("--connections", type=int, help="concurrent connections (default 64)")
    parser.add_argument("--quick", action="store_true", help="a few seconds each: the smoke test")
    parser.add_argument("--soak", action="store_true", help="every scenario at once for 5 minutes")
    overload = parser.add_mutually_exclusive_group()
    overload.add_argument(
        "--overload",
        action="store_true",
        help="run the overload figures (largest bodies, /metrics after 20,000 models); without"
        " --scenario, only them",
    )
    overload.add_argument("--no-overload", action="store_true", help="skip the overload figures")
    parser.add_argument(
        "--rate",
        type=float,
        help="events/s to pace the load at, shared by the scenarios (default: closed loop, as"
        f" fast as the server answers; --soak: {SOAK_RATE:g})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", help="also write the JSON report to this file")
    parser.add_argument(
        "--client", choices=("raw", "aiohttp"), default="raw", help="load generator client"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument(
        "--relay-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a RELAY_* setting for the relay, repeatable (e.g. RELAY_DATADOG_CONTENT=hash); one"
        " that leaves events out of a sink (a filter, sampling) stalls the wait for delivery",
    )
    args = parser.parse_args(argv)
    if args.quick and args.soak:
        parser.error("--quick and --soak exclude each other")
    if args.soak and args.overload:
        parser.error("--soak and --overload exclude each other")
    for item in args.relay_setting:
        name, sep, _ = item.partition("=")
        if not sep or not name.startswith("RELAY_"):
            parser.error(f"--relay-setting takes RELAY_NAME=VALUE, got {item!r}")
    for name in ("seconds", "connections", "rate"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    seconds = args.seconds or (
        QUICK_SECONDS if args.quick else SOAK_SECONDS if args.soak else DEFAULT_SECONDS
    )
    settings = Settings(seconds=seconds, connections=args.connections or (16 if args.quick else 64))
    rate = args.rate or (SOAK_RATE if args.soak else None)
    relay_settings = dict(item.split("=", 1) for item in args.relay_setting)
    settings = replace(
        settings, client=args.client, keep=args.keep, rate=rate, relay_settings=relay_settings
    )
    if args.quick:
        settings = replace(settings, variants=8, drain_timeout=20.0)
    if settings.cores.client is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, settings.cores.client)  # keep this process off the server's core
    # The scenarios run unless --overload alone asks for the overload figures only; those run
    # after the scenarios by default, unless scenarios were picked by name or --soak runs.
    scenarios = args.scenario or ([] if args.overload else list(SCENARIOS))
    with_overload = args.overload or not (args.scenario or args.soak or args.no_overload)
    result: dict[str, Any] = {
        "command": shlex.join(
            ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": report.machine(),
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k != "cores"},
            "pinning": settings.cores.describe(),
        },
    }
    if args.soak:
        result["soak"] = run_soak(scenarios, settings)
    else:
        result["scenarios"] = [run_scenario(name, settings) for name in scenarios]
    if with_overload:
        overload = (
            OverloadSettings.quick(settings.cores, args.keep)
            if args.quick
            else OverloadSettings(cores=settings.cores, keep=args.keep)
        )
        result["overload"] = run_overload(overload)
    encoded = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.out:
        with open(args.out, "wb") as handle:
            handle.write(encoded)
    if args.json:
        sys.stdout.buffer.write(encoded + b"\n")
    else:
        print(report.render(result))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
