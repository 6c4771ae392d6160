"""A throw-away local Synapse (SQLite, loopback only), for `python -m bot demo` and the tests.

The antispam module is wired with the very snippet the README shows (config/synapse-module.yaml),
so what is tested is what operators are told to install.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

# The operator-facing snippet in the checkout's config/ (not package data): the demo and the tests
# run from a checkout, with the dev extras (matrix-synapse) installed.
MODULE_SNIPPET = Path(__file__).resolve().parent.parent / "config" / "synapse-module.yaml"
GENEROUS = {"per_second": 1000, "burst_count": 1000}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def module_config(gate_url: str, gate_token: str, callbacks: list[str] | None = None) -> list[dict[str, Any]]:
    """The `modules:` list of the README snippet, with the gate's address and token filled in.

    ``callbacks`` replaces its ``enabled_callbacks`` (tests of what a different choice does).
    """
    text = string.Template(MODULE_SNIPPET.read_text(encoding="utf-8")).substitute(
        GATE_URL=gate_url, GATE_TOKEN=gate_token
    )
    modules = yaml.safe_load(text)["modules"]
    if callbacks is not None:
        modules[0]["config"]["enabled_callbacks"] = list(callbacks)
    return modules


@dataclass
class RegisteredUser:
    user_id: str
    password: str
    access_token: str
    device_id: str


class Homeserver:
    """One Synapse process. ``gate`` (url, token) wires the antispam module; None leaves it out."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        gate: tuple[str, str] | None = None,
        server_name: str = "localhost",
        room_message_limit: dict[str, float] | None = None,
        callbacks: list[str] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.callbacks = callbacks
        # Merged over the generated config last (tests: bcrypt_rounds, rate limits).
        self.extra_config = dict(extra_config or {})
        # Kept for the object's life so restart() brings back the same server, not a new one.
        self.macaroon_secret_key = secrets.token_hex(16)
        self.form_secret = secrets.token_hex(16)
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.gate = gate
        self.server_name = server_name
        self.shared_secret = secrets.token_hex(16)
        self.room_message_limit = room_message_limit or GENEROUS
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "homeserver.log"

    def config(self) -> dict[str, Any]:
        work = str(self.workdir)
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "pid_file": f"{work}/homeserver.pid",
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": f"{work}/homeserver.db"}},
            "log_config": f"{work}/log.yaml",
            "media_store_path": f"{work}/media",
            "signing_key_path": f"{work}/signing.key",
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": self.macaroon_secret_key,
            "form_secret": self.form_secret,
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": False,
            "use_presence": False,
            "url_preview_enabled": False,
            "room_list_publication_rules": [{"action": "allow"}],
            # Test and demo accounts log in and post quickly; Synapse's defaults would lock them out.
            "rc_message": self.room_message_limit,
            "rc_login": {"address": GENEROUS, "account": GENEROUS, "failed_attempts": GENEROUS},
            "rc_registration": GENEROUS,
            "rc_joins": {"local": GENEROUS, "remote": GENEROUS},
            "rc_invites": {"per_room": GENEROUS, "per_user": GENEROUS, "per_issuer": GENEROUS},
            "rc_room_creation": GENEROUS,
            "rc_admin_redaction": GENEROUS,
        }
        if self.gate is not None:
            config["modules"] = module_config(*self.gate, self.callbacks)
        config.update(self.extra_config)
        return config

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "homeserver.yaml").write_text(yaml.safe_dump(self.config()), encoding="utf-8")
        (self.workdir / "log.yaml").write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "formatters": {"precise": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
                    "handlers": {
                        "file": {"class": "logging.FileHandler", "filename": str(self.log_path), "formatter": "precise"}
                    },
                    "root": {"level": "INFO", "handlers": ["file"]},
                    "disable_existing_loggers": False,
                }
            ),
            encoding="utf-8",
        )
        command = [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.workdir / "homeserver.yaml")]
        subprocess.run([*command, "--generate-keys"], check=True, capture_output=True, cwd=self.workdir)
        with open(self.workdir / "stdout.log", "wb") as out:
            # Its own session: a Ctrl-C meant for the demo reaches Synapse only through stop().
            self.process = subprocess.Popen(command, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Synapse exited with {self.process.returncode}; see {self.workdir}/stdout.log")
            try:
                with urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                # start() is synchronous on purpose: pytest fixtures call it, and the demo runs it
                # in a thread (asyncio.to_thread), so this sleep never blocks an event loop.
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Synapse did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (SIGTERM) and start again on the same port, database and secrets, as an operator's restart."""
        self.stop()
        self.start(timeout)

    async def register(self, localpart: str, password: str | None = None, *, admin: bool = False) -> RegisteredUser:
        """Create an account with the shared-secret admin API (no login, so no login callback)."""
        password = password or secrets.token_urlsafe(12)
        url = f"{self.url}/_synapse/admin/v1/register"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                nonce = (await resp.json())["nonce"]
            mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
            mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), b"admin" if admin else b"notadmin"]))
            body = {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()}
            async with session.post(url, json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"registering {localpart} failed: {data}")
        return RegisteredUser(data["user_id"], password, data["access_token"], data["device_id"])


def random_token() -> str:
    return secrets.token_urlsafe(24)
