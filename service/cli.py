"""``llm-broadcast-relay``: serve, test-connection, replay, --version."""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import structlog
from aiohttp import web

from foundation.version import __version__
from service import replay
from service.app import SKIP_DELAY_SIGNAL, StopSignals, create_app, finish_requests
from service.config import (
    SHORT_TOKEN,
    ConfigError,
    RelayConfig,
    known_variables,
    load_config,
    short_tokens,
)
from service.relay import RELAY
from service.setup_check import check_sinks
from sinks.spool_files import ProcessLock, SpoolLockedError
from telemetry.logs import configure_logging
from telemetry.metrics import share_between_workers, worker_exited

log = structlog.get_logger("relay")
# Allocations between two young-generation collections (CPython's default: 700).
GC_THRESHOLD: Final = 50_000
# Seconds aiohttp may still take, once the requests in flight are done, to write their answers.
CLOSE_TIMEOUT: Final = 1.0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# -- serve ---------------------------------------------------------------------------------------


async def _serve(config: RelayConfig, worker: int) -> None:
    """Serve until SIGTERM/SIGINT, then stop without refusing what can still be stored.

    The stop, in order: /readyz turns 503 while ingest goes on storing and answering 2xx for
    RELAY_SHUTDOWN_DELAY (load balancers stop routing here meanwhile; a second signal skips it);
    the listening socket closes; requests in flight finish and are stored, and sends in flight
    finish, within RELAY_SHUTDOWN_GRACE from the close; what is left stays in the spool.
    """
    # Caught from the start: a stop during a long spool open waits for the open, not a kill.
    signals = StopSignals(counted=config.workers == 1)
    app = create_app(config, worker=worker)
    relay = app[RELAY]
    # finish_requests spends RELAY_SHUTDOWN_GRACE on the requests in flight; aiohttp's own wait
    # then only covers answers being written and a request that began during the close.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(
        runner, config.host, config.port, reuse_port=config.workers > 1 or None, backlog=1024
    )
    await site.start()
    log.info("listening", host=config.host, port=config.port, worker=worker)
    # Nobody was routed to a relay stopped before it listened: no delay then.
    delay = 0.0 if signals.stop.is_set() else config.shutdown_delay
    if config.probe_sinks_at_start and worker == 0:
        relay.probe_sinks_in_background()
    await signals.stop.wait()
    relay.begin_drain()
    if delay > 0:
        log.info(
            "draining",
            worker=worker,
            delay=delay,
            message="/readyz answers 503, events are still taken; the socket closes after"
            " RELAY_SHUTDOWN_DELAY (send the signal again, or Ctrl-C, to close it now)",
        )
        if not await signals.delay(delay):
            log.info("shutdown_delay_skipped", worker=worker)
    log.info("stopping", worker=worker)
    relay.grace_ends = asyncio.get_running_loop().time() + config.shutdown_grace
    await site.stop()  # the listening socket only: open connections finish their requests
    if cut := await finish_requests(app, relay.grace_ends):
        log.warning("requests_cut_off", worker=worker, count=cut, reason="RELAY_SHUTDOWN_GRACE")
    await runner.cleanup()
    signals.close()  # stopped: a later signal must not kill the exit half-way


def _tune_gc() -> None:
    """Fewer cyclic garbage collections, each scanning less.

    Events are plain dicts and lists freed by reference counting; the cycle collector only finds
    the odd cycle in the HTTP machinery. At its default threshold (700 allocations) it still runs
    thousands of times a second under load and scans the spool's in-memory tail each time: with
    the sinks behind, a tenth of the relay's CPU in `make bench` (0.255 -> 0.221 CPU s per 1,000
    protobuf spans). Everything start-up allocated is frozen out of the scans; the 5-minute soak
    in BENCHMARKS.md shows memory stays flat.
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 100)


def _run_worker(config: RelayConfig, worker: int) -> int:
    configure_logging(config.log_level)
    _tune_gc()
    _install_uvloop()
    try:
        asyncio.run(_serve(config, worker))
    except (SpoolLockedError, sqlite3.Error, OSError) as error:
        # The spool cannot be opened (another relay, a full disk): nothing was acknowledged.
        print(f"llm-broadcast-relay: worker {worker}: {error}", file=sys.stderr)
        return 2
    return 0


def _warn_unknown_variables(environ: Mapping[str, str]) -> None:
    """A ``RELAY_`` variable the relay does not read is most often a typo that silently leaves a
    setting at its default: say so at start (the relay still starts)."""
    known = known_variables()
    unknown = sorted(name for name in environ if name.startswith("RELAY_") and name not in known)
    if unknown:
        log.warning(
            "unknown_variables",
            names=unknown,
            message="not read by the relay: a typo? (README, Configuration)",
        )


def _raise_open_file_limit() -> int:
    """The soft limit on open files raised to the hard one (as Go's runtime does at start).

    Every connection is a file descriptor; the common soft limit of 1,024 lets about a thousand
    slow clients keep everyone else out, while the hard limit is usually far higher. Workers
    inherit the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft


def _check_can_listen(config: RelayConfig) -> str | None:
    """Why the relay cannot listen on its port, found before anything is opened."""
    try:
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if config.workers > 1:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind((config.host, config.port))
    except OSError as error:
        return (
            f"cannot listen on {config.host}:{config.port}: {error.strerror or error}"
            " (another process has this port? RELAY_HOST and RELAY_PORT set the address)"
        )
    return None


def serve(config: RelayConfig) -> int:
    lock = ProcessLock(config.data_dir / "relay.lock")
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except (SpoolLockedError, OSError) as error:
        print(f"llm-broadcast-relay: {error}", file=sys.stderr)
        return 2
    try:
        return _serve_locked(config)
    finally:
        lock.release()


def _serve_locked(config: RelayConfig) -> int:
    problem = _check_can_listen(config)
    if problem is not None:
        print(f"llm-broadcast-relay: {problem}", file=sys.stderr)
        return 2
    log.info("config", **config.describe())
    log.info("open_file_limit", limit=_raise_open_file_limit())
    if not config.ingest_tokens:
        log.warning("ingest_open", message="RELAY_INGEST_TOKENS is unset: anyone can send events")
    elif short := short_tokens(config.ingest_tokens):
        log.warning(
            "ingest_tokens_short",
            tenants=short,
            message=f"these tenants' RELAY_INGEST_TOKENS are under {SHORT_TOKEN} characters,"
            " easy to guess: generate tokens with `openssl rand -hex 32`",
        )
    if config.workers == 1:
        return _run_worker(config, 0)
    # One process per core, each with its own spool, sharing the port through SO_REUSEPORT.
    share_between_workers(config.data_dir / "metrics")
    # Inherited by the workers until they handle it: a skip sent early must not kill one.
    signal.signal(SKIP_DELAY_SIGNAL, signal.SIG_IGN)
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_worker_process, args=(config, i)) for i in range(config.workers)
    ]
    for process in workers:
        process.start()

    def forward(signum: int, _: Any) -> None:
        for process in workers:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    stopping = fault = False

    def stop(signum: int, _: Any) -> None:
        # The first stop goes to the workers as it came; any later one (Ctrl-C twice) as the
        # skip of their shutdown delay, since a worker may get each stop twice (StopSignals).
        nonlocal stopping
        forward(SKIP_DELAY_SIGNAL if stopping else signum, _)
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running = list(workers)
    while running:
        multiprocessing.connection.wait([p.sentinel for p in running])
        for process in [p for p in running if not p.is_alive()]:
            running.remove(process)
            if process.pid is not None:
                worker_exited(process.pid)
            if not stopping:
                # A worker's spool is read by that worker alone: rather than leave it stranded,
                # stop the relay whole so that its supervisor restarts every worker.
                log.error("worker_exited", pid=process.pid, exitcode=process.exitcode)
                stopping = fault = True
                forward(signal.SIGTERM, None)
    # A worker ended by a signal (exitcode -N) exits as a shell reports it: 128 + N.
    codes = [128 - code if (code := p.exitcode or 0) < 0 else code for p in workers]
    return max(1, *codes) if fault else max(codes)


def _worker_process(config: RelayConfig, worker: int) -> None:
    sys.exit(_run_worker(config, worker))


# -- test-connection -----------------------------------------------------------------------------


async def _test_connection(config: RelayConfig, send_test_event: bool) -> int:
    sinks = {name: setup.spec.build(setup.config) for name, setup in config.sinks.items()}
    try:
        for sink in sinks.values():
            await sink.start()
        results = await check_sinks(sinks, send_test_event)
    finally:
        for sink in sinks.values():
            await sink.close()
    for result in results.values():
        print(f"{'PASS' if result.ok else 'FAIL'}  {result.message}")
    return 0 if all(result.ok for result in results.values()) else 1


# -- entry point ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llm-broadcast-relay",
        description="Receive LLM gateway telemetry and deliver it to Tempo, Datadog and files.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the relay (the default)")
    check_parser = commands.add_parser(
        "test-connection", help="probe every enabled sink; exit 0 only if all pass"
    )
    check_parser.add_argument(
        "--send-test-event",
        action="store_true",
        help="also send one event marked source.test through every sink",
    )
    replay.add_parser(commands)
    args = parser.parse_args(argv)
    try:
        config = load_config()
    except ConfigError as error:
        print(f"llm-broadcast-relay: {error}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    _warn_unknown_variables(os.environ)
    if args.command in (None, "serve"):
        return serve(config)
    if args.command == "test-connection":
        return asyncio.run(_test_connection(config, args.send_test_event))
    return asyncio.run(replay.run(config, args.file, args.sinks))  # service/replay.py
