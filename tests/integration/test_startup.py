"""The gate answers from the store before the bot has logged in, and stops cleanly meanwhile."""

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from bot.devserver import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = "startup-token-0123456789"


def _post(port: int, callback: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/antispam/{callback}", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_gate_answers_while_the_homeserver_is_down(tmp_path):
    gate_port = free_port()
    config = {
        "homeserver": {"url": f"http://127.0.0.1:{free_port()}", "user_id": "@bot:hs.test", "password": "pw"},
        "database": {"path": str(tmp_path / "bot.db")},
        "gate": {"listen": f"127.0.0.1:{gate_port}", "token": TOKEN},
        "language": "en",
    }
    (tmp_path / "bot.yaml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "bot.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "--config", str(tmp_path / "bot.yaml")], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline and health is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{gate_port}/health", timeout=1) as resp:
                    health = json.loads(resp.read())
            except OSError:
                time.sleep(0.1)
        assert health == {"status": "ok", "matrix": "connecting", "onboarding_queue": 0}
        status, body = _post(gate_port, "user_may_create_room", {"user_id": "@new:hs.test"})
        assert status == 403 and "!agree" in body["error"]
        assert _post(gate_port, "user_may_create_room", {"user_id": "@far:other.test"})[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "stopped" in (tmp_path / "bot.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
