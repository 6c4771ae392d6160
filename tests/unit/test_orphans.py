"""A killed test run's leftovers (Synapse in its own session, bots, PostgreSQL) are stopped by the
next run, and nothing of a run still going is touched (tests/orphans.py)."""

import os
import subprocess
import sys

from tests import orphans

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _spawn_marked(mark: str) -> subprocess.Popen:
    return subprocess.Popen(SLEEPER, env={**os.environ, orphans.MARK: mark}, start_new_session=True)


def test_a_process_whose_test_run_is_gone_is_stopped_and_one_whose_run_goes_on_is_not():
    code = "import os; from tests import orphans; orphans.mark_this_process(); print(os.environ[orphans.MARK])"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    own_pid, _, own_start = os.environ[orphans.MARK].partition(":")
    # Gone: a process that ran and exited; alive: this run; a reused pid: this process's pid with
    # another start time is not this process, so that owner is gone too.
    left_behind, still_owned = _spawn_marked(gone.stdout.strip()), _spawn_marked(os.environ[orphans.MARK])
    reused = _spawn_marked(f"{own_pid}:{int(own_start) - 1}")
    unknown = _spawn_marked("not-a-mark")
    try:
        assert {left_behind.pid, reused.pid} <= set(orphans.orphans())
        orphans.stop_orphans(grace=5)  # another run's sweep may be first: what counts is the outcome
        assert left_behind.wait(timeout=10) is not None and reused.wait(timeout=10) is not None
        assert still_owned.poll() is None and unknown.poll() is None
    finally:
        for process in (left_behind, still_owned, reused, unknown):
            if process.poll() is None:
                process.kill()
            process.wait()


def test_this_run_marks_what_it_starts():
    child = subprocess.run([sys.executable, "-c", f"import os; print(os.environ['{orphans.MARK}'])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == f"{os.getpid()}:{orphans._start_time(os.getpid())}"


def test_a_process_of_another_pid_namespace_is_never_taken_for_a_leftover(monkeypatch):
    """Review 11c, break 2: a run in a container (its own pid namespace) looks ownerless from the
    host, whose sweep killed it."""
    sleeper = _spawn_marked("1:-1")  # no process ever started at tick -1: surely gone
    try:
        assert sleeper.pid in orphans.orphans()
        monkeypatch.setattr(orphans, "_same_namespace", lambda pid: pid != str(sleeper.pid))
        assert sleeper.pid not in orphans.orphans()
    finally:
        sleeper.kill()
        sleeper.wait()
