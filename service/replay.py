"""``llm-broadcast-relay replay``: send again what a dead-letter file, a file-sink file or a spool
still owes the sinks, safely beside a running relay, saying plainly what it did.

It reads and checks its whole source first, so that a usage error (no such file, a sink not
enabled here, the live dead-letter file, a spool a running relay holds) stops it with one line and
exit 2 before anything is sent; it never appends to the file it reads; it exits 0 only when every
event it read was delivered. It sends as the relay does, with this environment's sink settings:
one dispatcher per sink over a spool, a private scratch spool for a file's events, the spool
itself for a spool, whose cursors then move so that no relay opening it sends those events again.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import orjson
import zstandard

from service.config import RelayConfig
from sinks.base import Sink
from sinks.dead_letters import DeadLetters, ReplayLine, read_replay_lines
from sinks.dispatcher import Dispatcher
from sinks.file import FileSinkConfig
from sinks.outcomes import SinkStatus
from sinks.spool import Spool
from sinks.spool_files import ProcessLock, SpoolLockedError
from telemetry.metrics import Metrics

EXIT_DELIVERED: Final = 0
EXIT_UNDELIVERED: Final = 1
EXIT_USAGE: Final = 2
_NO_CAP: Final = 1 << 62  # replay's spools are never refused for size
_SQLITE_HEADER: Final = b"SQLite format 3\x00"
_WORKER_SPOOL: Final = re.compile(r"worker-\d+\.sqlite3")
_SHOWN_SKIPS: Final = 10

SETTINGS: Final = (
    "replay sends with the server's sink settings, read from this environment (RELAY_SINKS and"
    " each sink's RELAY_* and DD_* variables, as `serve` reads them): run it with the relay's own"
    " environment, e.g. `docker compose exec relay llm-broadcast-relay replay ...`"
)
DESCRIPTION: Final = """\
Send events again, once the cause of their failure is fixed. SOURCE is one of:
  a dead-letter file, moved aside first (the relay appends to data/dead-letter/<sink>.jsonl):
      each event to the sink that dead-lettered it;
  a file-sink file (llm-events*.jsonl, .gz and .zst rotations too): to every enabled sink but file;
  a spool (data/spool/, a data directory, a worker-N.sqlite3: a removed replica's volume): what it
      still owes each sink, marked delivered there so that no relay sends it again.
--sinks sends a file's events to the sinks named instead; for a spool it picks whose to send.

Replay sends with the server's sink settings: RELAY_SINKS and each sink's RELAY_* and DD_*
variables, as `serve` reads them. Run it with the relay's own environment, e.g.
`docker compose exec relay llm-broadcast-relay replay ...` or the same env file. Events that
fail again go to the dead-letter files under RELAY_DATA_DIR.

Exit status: 0 every event read was delivered; 1 some were not (dead-lettered again, refused, an
unreadable line, left in the spool); 2 nothing was sent (no such file, not a spool, a sink not
enabled here, the live dead-letter file, a spool in use by a running relay).
"""


class UsageError(Exception):
    """Replay cannot start (exit 2), nothing was sent; ``settings``: say where sinks come from."""

    def __init__(self, message: str, settings: bool = False) -> None:
        super().__init__(message)
        self.settings = settings


@dataclass(slots=True)
class Plan:
    """What a replay will send, read and checked in full before anything is sent."""

    source: Path
    bodies: dict[str, list[bytes]] = field(default_factory=dict)  # a file: each sink's events
    owed: dict[Path, dict[str, int]] = field(default_factory=dict)  # spools: what each owes
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (events not sent, why)

    @property
    def sinks(self) -> list[str]:
        names = [*self.bodies, *(name for owed in self.owed.values() for name in owed)]
        return list(dict.fromkeys(names))


def add_parser(commands: Any) -> None:
    """The ``replay`` subcommand (``commands``: argparse's subparsers)."""
    parser = commands.add_parser(
        "replay",
        help="re-send a dead-letter file, a file-sink file or a spool (with serve's environment)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, metavar="SOURCE", help="what to send (see above)")
    parser.add_argument("--sinks", default="", help="comma list of enabled sinks (see above)")


async def run(config: RelayConfig, source: Path, sinks_option: str = "") -> int:
    """``replay SOURCE [--sinks a,b]``: the exit code (see ``DESCRIPTION``)."""
    only = [name.strip().lower() for name in sinks_option.split(",") if name.strip()]
    dead_letters = DeadLetters(config.data_dir / "dead-letter")
    locks: list[ProcessLock] = []
    try:
        try:
            plan = await _plan(config, source, only, dead_letters)
            locks = _lock_data_dirs(plan)
            sinks = await _start_sinks(config, plan.sinks)
        except UsageError as error:
            print(f"llm-broadcast-relay replay: {error}", file=sys.stderr)
            if error.settings:
                print(f"  {SETTINGS}", file=sys.stderr)
            return EXIT_USAGE
        try:
            statuses = await _deliver(config, plan, sinks, dead_letters)
        finally:
            for sink in sinks.values():
                await sink.close()
    finally:
        dead_letters.close()
        _release(locks)
    return _summarize(plan, statuses, dead_letters)


def _lock_data_dirs(plan: Plan) -> list[ProcessLock]:
    """While a spool is replayed, its data directory is taken as ``serve`` takes it: a relay
    started there meanwhile is refused at once with one line, rather than starting, failing on
    the spool's own lock and being restarted into the same failure until replay ends."""
    locks: list[ProcessLock] = []
    for directory in dict.fromkeys(p.parent.parent for p in plan.owed if p.parent.name == "spool"):
        lock = ProcessLock(directory / "relay.lock")
        try:
            lock.acquire()
        except (SpoolLockedError, OSError) as error:
            _release(locks)
            raise UsageError(f"{directory}: {error}; stop that relay first") from None
        locks.append(lock)
    return locks


def _release(locks: list[ProcessLock]) -> None:
    for lock in locks:
        lock.release()


# -- planning: read and check everything first ---------------------------------------------------


async def _plan(
    config: RelayConfig, source: Path, only: list[str], dead_letters: DeadLetters
) -> Plan:
    unknown = [name for name in only if name not in config.sinks]
    if unknown:
        raise UsageError(
            f"--sinks {','.join(unknown)}: not enabled here (RELAY_SINKS={_enabled(config)})",
            settings=True,
        )
    spools = _spool_paths(source)
    if spools is not None:
        return await _plan_spools(config, source, spools, only)
    _refuse_live_dead_letters(source, dead_letters)  # before reading: it would hold the relay up
    plan = Plan(source)
    lines = _read(source)
    plan.skipped = [(1, f"line {n}: {why}") for n, _, event, why in lines if event is None]
    plan.bodies = _route(config, plan, lines, only)
    _refuse_file_sink_output(config, source, plan.bodies)
    return plan


def _read(source: Path) -> list[ReplayLine]:
    """Every line of a dead-letter or file-sink file; ``UsageError`` if it cannot be read."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{source}: no such file") from None
    except OSError as error:
        raise UsageError(f"cannot read {source}: {error.strerror}") from None
    try:
        # The relay appends under an exclusive flock: a shared one waits out a batch being
        # written, so that it is not read half-written (a courtesy where locks are unsupported).
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
        return list(read_replay_lines(source))
    except (OSError, EOFError, zstandard.ZstdError) as error:  # a damaged .gz or .zst
        raise UsageError(f"cannot read {source}: {error} (nothing was sent)") from None
    finally:
        os.close(fd)


def _route(
    config: RelayConfig, plan: Plan, lines: list[ReplayLine], only: list[str]
) -> dict[str, list[bytes]]:
    """Each target sink's events: a dead letter to its sink, a file-sink line to every enabled
    sink but file (they came from one), or all of them to ``only``."""
    nameless = only or [name for name in config.sinks if name != "file"]
    bodies: dict[str, list[bytes]] = {}
    not_enabled: dict[str, int] = {}
    homeless = 0
    for line in lines:
        if line.event is None:
            continue
        targets = only or ([line.sink] if line.sink else nameless)
        homeless += not targets
        body = orjson.dumps(line.event)
        for name in targets:
            if name in config.sinks:
                bodies.setdefault(name, []).append(body)
            else:
                not_enabled[name] = not_enabled.get(name, 0) + 1
    if not_enabled:
        raise _not_enabled(config, plan.source, not_enabled, "or send them elsewhere with --sinks")
    if homeless:
        raise UsageError(
            f"{plan.source} holds {_events(homeless)} of a file sink (lines naming no sink) and no"
            " sink but file is enabled here: name where to send them with --sinks, or enable"
            f" those sinks in RELAY_SINKS (now {_enabled(config)})",
            settings=True,
        )
    return bodies


def _refuse_live_dead_letters(source: Path, dead_letters: DeadLetters) -> None:
    """Never append to the file being read, nor race the relay that appends to it: any
    ``<sink>.jsonl`` of the dead-letter directory, whether that sink is enabled or not."""
    real = source.resolve()  # a link to the live file is the live file
    name = real.name.removesuffix(".jsonl")
    if real.name.endswith(".jsonl") and _same_file(real.parent, dead_letters.directory):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = source.with_name(f"{name}.replay-{stamp}.jsonl")
        raise UsageError(
            f"{source} is the live dead-letter file of sink {name}: the relay appends to it"
            " and replay would add what fails again to the file it reads. Move it aside"
            f" first, then replay the moved file: mv {source} {aside} &&"
            f" llm-broadcast-relay replay {aside}"
        )


def _refuse_file_sink_output(
    config: RelayConfig, source: Path, bodies: dict[str, list[bytes]]
) -> None:
    setup = config.sinks.get("file")
    output = setup.config.path if setup and isinstance(setup.config, FileSinkConfig) else None
    if "file" in bodies and output is not None and _same_file(source, output):
        raise UsageError(
            f"{source} is the file sink's output: replaying it to the file sink would append"
            " every event to the file being read; leave file out of --sinks"
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return a.resolve() == b.resolve()


def _spool_paths(source: Path) -> list[Path] | None:
    """The spools ``source`` names (a spool directory, a data directory or a spool file), or
    None when it is a file that is not a database (a dead-letter or file-sink file)."""
    if source.is_dir():
        for directory in (source, source / "spool"):
            found = sorted(
                p for p in directory.glob("*.sqlite3") if _WORKER_SPOOL.fullmatch(p.name)
            )
            if found:
                return found
        raise UsageError(
            f"{source} is a directory but not a spool (no worker-N.sqlite3 in it or in its"
            " spool/): replay takes a dead-letter file, a file-sink file or a spool directory"
        )
    try:
        with source.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError:
        return None  # reading it as a file says why it cannot be read
    return [source] if header == _SQLITE_HEADER else None


async def _plan_spools(
    config: RelayConfig, source: Path, paths: list[Path], only: list[str]
) -> Plan:
    plan = Plan(source)
    not_enabled: dict[str, int] = {}
    for path in paths:
        _check_spool(path)
        owed, problems = await _owed(path)
        for problem in problems:  # as a relay opening it would log them
            print(f"warning: {path}: {problem}", file=sys.stderr)
        plan.owed[path] = {}
        for name, count in owed.items():
            if only and name not in only:
                plan.skipped.append((count, f"{_events(count)} owed to {name} left in {path}"))
            elif name not in config.sinks:
                not_enabled[name] = not_enabled.get(name, 0) + count
            else:
                plan.owed[path][name] = count
    if not_enabled:
        hint = "or leave it out with --sinks (its events stay in the spool)"
        raise _not_enabled(config, source, not_enabled, hint)
    return plan


def _check_spool(path: Path) -> None:
    """A relay spool that SQLite reads, checked read-only first: opening a damaged database as a
    ``Spool`` would move it aside and start an empty one in its place."""
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.Error as error:
        raise UsageError(f"cannot read the spool {path}: {error}") from None
    if not {"events", "cursors"} <= tables:
        raise UsageError(f"{path} is an SQLite database but not a relay spool")
    if verdict != "ok":
        raise UsageError(f"{path} is damaged ({verdict}): replay cannot read it")


async def _owed(path: Path) -> tuple[dict[str, int], list[str]]:
    """What the spool at ``path`` owes each sink it has a cursor for, and what is wrong with it.

    Opened for no sink, every cursor is a "removed" one: its count is what that sink is owed,
    and nothing is written for sinks the spool does not know.
    """
    spool = Spool(path, _NO_CAP, ())
    try:
        await spool.open()
        return {n: c for n, c in spool.removed.items() if c}, [p.message for p in spool.problems]
    except SpoolLockedError as error:
        holder = re.search(r"\(pid [^)]*\)", str(error))
        raise UsageError(
            f"{path} is in use by a running relay {holder[0] if holder else ''}, which delivers"
            " it itself: stop that relay first to replay its spool"
        ) from None
    except (OSError, sqlite3.Error) as error:
        raise UsageError(f"cannot open the spool {path}: {error}") from None
    finally:
        await spool.close()


def _not_enabled(config: RelayConfig, source: Path, counts: dict[str, int], hint: str) -> Exception:
    owed = "; ".join(f"{_events(count)} for sink {name}" for name, count in counts.items())
    return UsageError(
        f"{source}: {owed}, not enabled here (RELAY_SINKS={_enabled(config)}); nothing was sent."
        f" Enable it in RELAY_SINKS with its settings, {hint}",
        settings=True,
    )


def _events(count: int) -> str:
    return f"{count} event" if count == 1 else f"{count} events"


def _enabled(config: RelayConfig) -> str:
    return ",".join(config.sinks)


# -- sending ---------------------------------------------------------------------------------------


async def _start_sinks(config: RelayConfig, names: list[str]) -> dict[str, Sink]:
    sinks: dict[str, Sink] = {}
    for name in names:
        setup = config.sinks[name]
        sink = setup.spec.build(setup.config)
        try:
            await sink.start()
        except Exception as error:
            for started in [sink, *sinks.values()]:
                await started.close()
            raise UsageError(f"cannot start the {name} sink: {error}", settings=True) from None
        sinks[name] = sink
    return sinks


@dataclass(slots=True)
class _Sender:
    """Drains spools into the started sinks, one dispatcher per sink, and adds up what it did."""

    config: RelayConfig
    sinks: dict[str, Sink]
    dead_letters: DeadLetters
    metrics: Metrics = field(default_factory=Metrics)
    totals: dict[str, SinkStatus] = field(default_factory=dict)

    async def drain(self, spool: Spool, name: str, count: int, origin: Path) -> None:
        """Until every event ``spool`` holds for ``name`` is delivered or dead-lettered."""
        setup = self.config.sinks[name]
        retry = f"RELAY_{name.upper()}_MAX_RETRY_TIME={setup.dispatch.max_retry_time:g} s"
        print(f"{name}: sending {_events(count)} from {origin} (retries up to {retry})")
        settings = replace(setup.dispatch, flush_interval=0.0)
        dispatcher = Dispatcher(self.sinks[name], settings, spool, self.dead_letters, self.metrics)
        dispatcher.start()
        try:
            await spool.wait_resolved(name)
        finally:
            await dispatcher.stop(self.config.shutdown_grace)
        total, done = self.totals.setdefault(name, SinkStatus()), dispatcher.status
        total.sent += done.sent
        total.dead_lettered += done.dead_lettered
        total.partial_rejected += done.partial_rejected
        total.filtered += done.filtered
        total.sampled_out += done.sampled_out
        total.filter_failed += done.filter_failed


async def _deliver(
    config: RelayConfig, plan: Plan, sinks: dict[str, Sink], dead_letters: DeadLetters
) -> dict[str, SinkStatus]:
    sender = _Sender(config, sinks, dead_letters)
    if plan.bodies:
        with tempfile.TemporaryDirectory(prefix="relay-replay-") as scratch:
            for name, bodies in plan.bodies.items():
                spool = Spool(Path(scratch) / f"{name}.sqlite3", _NO_CAP, [name])
                await spool.open()
                try:
                    await spool.append(bodies)
                    await sender.drain(spool, name, len(bodies), plan.source)
                finally:
                    await spool.close()
    for path, owed in plan.owed.items():
        if not owed:
            continue
        spool = Spool(path, _NO_CAP, list(owed))  # sinks it has cursors for: nothing added
        try:
            await spool.open()
        except (SpoolLockedError, OSError, sqlite3.Error) as error:  # a relay started meanwhile
            await spool.close()
            plan.skipped.append((sum(owed.values()), f"{path} could not be opened: {error}"))
            continue
        try:
            for name, count in owed.items():
                await sender.drain(spool, name, count, path)
        finally:
            await spool.close()
    return sender.totals


def _summarize(plan: Plan, statuses: dict[str, SinkStatus], dead_letters: DeadLetters) -> int:
    undelivered = 0
    for name, status in statuses.items():
        line = f"{name}: {status.sent} sent, {status.dead_lettered} dead-lettered"
        if status.dead_lettered:
            line += f" (to {dead_letters.path(name)})"
        if status.partial_rejected:
            line += f", {status.partial_rejected} of those sent refused by the peer (not retried)"
        if status.filtered or status.sampled_out or status.filter_failed:
            line += (
                f", {status.filtered + status.filter_failed} left out by"
                f" RELAY_{name.upper()}_FILTER ({status.filter_failed} of them because it failed)"
                f" and {status.sampled_out} by its sampling"
            )
        print(line)
        undelivered += status.dead_lettered + status.partial_rejected
    for _, why in plan.skipped[:_SHOWN_SKIPS]:
        print(f"not sent: {plan.source}: {why}", file=sys.stderr)
    if len(plan.skipped) > _SHOWN_SKIPS:
        print(f"not sent: ... and {len(plan.skipped) - _SHOWN_SKIPS} more", file=sys.stderr)
    undelivered += sum(count for count, _ in plan.skipped)
    if undelivered:
        print(f"llm-broadcast-relay replay: {_events(undelivered)} not delivered", file=sys.stderr)
        return EXIT_UNDELIVERED
    if not statuses:
        print(f"nothing to replay: {plan.source} holds no event to send")
    return EXIT_DELIVERED
