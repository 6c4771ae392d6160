"""A killed test run's leftovers (Synapse in its own session, bots, PostgreSQL) are stopped by the
next run, and nothing of a run still going is touched (tests/orphans.py)."""

import os
import subprocess
import sys

from tests import orphans

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _spawn_marked(owner: int) -> subprocess.Popen:
    return subprocess.Popen(SLEEPER, env={**os.environ, orphans.MARK: str(owner)}, start_new_session=True)


def test_a_process_whose_test_run_is_gone_is_stopped_and_one_whose_run_goes_on_is_not():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_owner = int(gone.stdout)
    left_behind, still_owned = _spawn_marked(dead_owner), _spawn_marked(os.getpid())
    try:
        stopped = orphans.stop_orphans(grace=5)
        assert left_behind.pid in stopped and still_owned.pid not in stopped
        assert left_behind.wait(timeout=10) is not None
        assert still_owned.poll() is None
    finally:
        for process in (left_behind, still_owned):
            if process.poll() is None:
                process.kill()
            process.wait()


def test_this_run_marks_what_it_starts():
    child = subprocess.run([sys.executable, "-c", f"import os; print(os.environ['{orphans.MARK}'])"],
                           capture_output=True, text=True, check=True)
    assert int(child.stdout) == os.getpid()
