"""Processes a test run left behind when it was killed (a CI timeout, Ctrl-C twice, SIGKILL): the
Synapse servers (their own session, so no signal of the run reaches them), bots and PostgreSQL
servers it started. Each test process marks its environment with its pid, every process it starts
inherits the mark, and the next run stops those whose marking process is gone."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

MARK = "RULESBOT_TEST_OWNER"
log = logging.getLogger(__name__)


def mark_this_process() -> None:
    os.environ[MARK] = str(os.getpid())


def _owner(pid: str) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(MARK.encode() + b"="):
            value = entry.split(b"=", 1)[1]
            return int(value) if value.isdigit() else None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphans() -> list[int]:
    """Processes marked by a test process that no longer runs."""
    if not Path("/proc").is_dir():
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            owner = _owner(entry.name)
            if owner is not None and owner != int(entry.name) and not _alive(owner):
                found.append(int(entry.name))
    return found


def stop_orphans(grace: float = 5.0) -> list[int]:
    """SIGTERM every orphan, SIGKILL what is left after ``grace`` seconds; the pids stopped."""
    stopped = orphans()
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in stopped):
        time.sleep(0.1)
    for pid in stopped:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if stopped:
        log.warning("stopped %d process(es) an earlier, killed test run left behind: %s", len(stopped), stopped)
    return stopped
