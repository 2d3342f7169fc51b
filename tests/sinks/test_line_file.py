"""LineFile: appends land as whole lines or not at all, on a real file system that fills up."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sinks.line_file import LineFile
from tests.helpers.tmpfs import fill_up, small_tmpfs

# Larger than the room left in the file's last page, so a full disk takes part of it (a short
# write) before refusing the rest: the case that used to leave a torn line.
BIG_BATCH = b"".join(b'{"line":%d,"padding":"%s"}\n' % (i, b"x" * 200) for i in range(100))


@contextmanager
def append_only(path: Path) -> Iterator[None]:
    """``chattr +a``: the kernel still takes appends but refuses to truncate the file."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed: cannot make a truncate fail for real")
    if subprocess.run([chattr, "+a", str(path)], capture_output=True, check=False).returncode:
        pytest.skip(f"this file system does not take chattr +a on {path}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-a", str(path)], check=True)


def test_appends_whole_lines_and_keeps_them_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"
    with LineFile(path) as lines:
        assert lines.cut_at_open == 0
        lines.append(b'{"a":1}\n')
        lines.append(b"")
        lines.append(b'{"b":2}\n{"c":3}\n')
        assert lines.size == path.stat().st_size
    with LineFile(path, fsync=False) as lines:
        assert lines.cut_at_open == 0
        lines.append(b'{"d":4}\n')
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n{"c":3}\n{"d":4}\n'


def test_data_that_is_not_whole_lines_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"
    with LineFile(path) as lines, pytest.raises(ValueError, match="whole lines"):
        lines.append(b'{"a":1}')
    assert path.read_bytes() == b""


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        (b'{"a":1}\n{"b":', b'{"a":1}\n'),
        (b'{"a":1}\n{"b":2}\n', b'{"a":1}\n{"b":2}\n'),
        (b'{"b":', b""),
        (b"", b""),
        # A torn tail longer than one read of the tail.
        (b'{"a":1}\n' + b"x" * 20_000, b'{"a":1}\n'),
    ],
)
def test_torn_tail_at_open_is_cut_back_to_the_last_whole_line(
    tmp_path: Path, content: bytes, kept: bytes
) -> None:
    path = tmp_path / "lines.jsonl"
    path.write_bytes(content)
    with LineFile(path) as lines:
        assert lines.cut_at_open == len(content) - len(kept)
        lines.append(b'{"z":26}\n')
    assert path.read_bytes() == kept + b'{"z":26}\n'


def test_failed_append_on_a_full_disk_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        path = disk / "lines.jsonl"
        with LineFile(path) as lines:
            lines.append(b'{"a":1}\n')
            before = path.read_bytes()
            ballast = fill_up(disk)
            with pytest.raises(OSError, match="No space left") as raised:
                lines.append(BIG_BATCH)
            assert raised.value.errno == errno.ENOSPC
            assert path.read_bytes() == before
            ballast.unlink()
            lines.append(BIG_BATCH)
        assert path.read_bytes() == before + BIG_BATCH


def test_a_cut_back_that_failed_is_made_before_the_next_append(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        path = disk / "lines.jsonl"
        with LineFile(path) as lines:
            lines.append(b'{"a":1}\n')
            before = path.read_bytes()
            ballast = fill_up(disk)
            with append_only(path):
                with pytest.raises(OSError, match="No space left"):
                    lines.append(BIG_BATCH)
                torn = path.read_bytes()
                assert torn != before and not torn.endswith(b"\n")
                # Still cannot cut back: this append fails too and adds nothing.
                with pytest.raises(PermissionError):
                    lines.append(b'{"b":2}\n')
                assert path.read_bytes() == torn
            ballast.unlink()
            lines.append(b'{"b":2}\n')
        assert path.read_bytes() == before + b'{"b":2}\n'
