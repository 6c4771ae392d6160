"""`python -m bot demo` starts everything, and Ctrl-C stops it all, leaving no process or file behind."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def test_demo_runs_and_ctrl_c_leaves_nothing_behind():
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", "--port", "0"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(output)
        assert "Press Ctrl-C" in text, text
        assert re.search(r"Homeserver URL: http://127\.0\.0\.1:\d+", text)
        assert "@alice:localhost" in text and "password: alice-password" in text
        workdir = Path(re.search(r"Files: (\S+)", text).group(1))
        assert _processes_mentioning(str(workdir)), "Synapse runs from the demo's folder"
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert process.wait(timeout=60) == 0
        assert _processes_mentioning(str(workdir)) == [], "a process was left running"
        assert not workdir.exists(), "the demo's files were left behind"
    finally:
        if process.poll() is None:
            process.kill()
