"""Processes a test run left behind when it was killed (a CI timeout, Ctrl-C twice, SIGKILL): the
Synapse servers (their own session, so no signal of the run reaches them), bots and PostgreSQL
servers it started. Each test process marks its environment with its pid and start time, every
process it starts inherits the mark, and the next run stops those whose marking process is gone.

Only processes of this pid namespace are looked at (a run in a container has pids of its own, so
its owner would look gone from here), an owner counts as gone only if no process with its pid and
start time runs (a reused pid is not the owner), and each leftover is signalled through a pidfd
taken after its mark was read, so a pid freed and reused meanwhile is never signalled."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

MARK = "RULESBOT_TEST_OWNER"
log = logging.getLogger(__name__)


def _start_time(pid: int | str) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat, field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name start at field 3


def mark_this_process() -> None:
    os.environ[MARK] = f"{os.getpid()}:{_start_time('self')}"


def _mark(pid: str) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(MARK.encode() + b"="):
            return entry.split(b"=", 1)[1].decode(errors="replace")
    return None


def _owner_gone(mark: str) -> bool:
    owner, _, started = mark.partition(":")
    if not owner.isdigit() or not started:
        return False  # not a mark this code wrote: leave it alone
    return _start_time(owner) != started


def _same_namespace(pid: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    except OSError:
        return False


def orphans() -> list[int]:
    """Processes of this pid namespace marked by a test process that no longer runs."""
    if not Path("/proc/self/ns/pid").exists():
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or not _same_namespace(entry.name):
            continue
        mark = _mark(entry.name)
        if mark is not None and _owner_gone(mark):
            found.append(int(entry.name))
    return found


def _pidfd_of_orphan(pid: int) -> int | None:
    """A pidfd for ``pid`` if it is still the orphan found (its mark read again after opening)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    mark = _mark(str(pid))
    if mark is None or not _owner_gone(mark):
        os.close(fd)
        return None
    return fd


def _signal(fd: int, signum: int) -> bool:
    """Send ``signum``; False once the process has exited."""
    try:
        signal.pidfd_send_signal(fd, signum)
        return True
    except ProcessLookupError:
        return False


def stop_orphans(grace: float = 5.0) -> list[int]:
    """SIGTERM every orphan, SIGKILL what is left after ``grace`` seconds; the pids stopped."""
    fds = {pid: fd for pid in orphans() if (fd := _pidfd_of_orphan(pid)) is not None}
    try:
        for fd in fds.values():
            _signal(fd, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_signal(fd, 0) for fd in fds.values()):
            time.sleep(0.1)
        for fd in fds.values():
            _signal(fd, signal.SIGKILL)
    finally:
        for fd in fds.values():
            os.close(fd)
    if fds:
        log.warning("stopped %d process(es) an earlier, killed test run left behind: %s", len(fds), sorted(fds))
    return sorted(fds)
