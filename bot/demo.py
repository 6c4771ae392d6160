"""`python -m bot demo`: a local Synapse with the gate wired in, the bot, and sample accounts.

Everything lives in a temporary folder and on loopback; Ctrl-C stops the bot and Synapse and
removes the folder.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import aiohttp
import yaml

from bot.config import load_config
from bot.devserver import Homeserver, free_port, random_token
from bot.service import Service

log = logging.getLogger(__name__)

SAMPLE_USERS = ("alice", "bob")
MODERATOR = "moderator"


def _port_or_free(port: int) -> int:
    """The asked-for port if it is free, else any free one (0 asks for any)."""
    if port == 0:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


async def _create_room(hs: Homeserver, token: str, body: dict) -> str:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        async with session.post(f"{hs.url}/_matrix/client/v3/createRoom", json=body) as resp:
            data = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"creating the demo room {body.get('name')} failed: {data}")
    return data["room_id"]


async def _create_rooms(hs: Homeserver, token: str, bot_user_id: str) -> None:
    """A public lobby the bot protects (room mode next to the gate), and the moderators' room."""
    await _create_room(hs, token, {
        "name": "Lobby",
        "room_alias_name": "lobby",
        "preset": "public_chat",
        "visibility": "public",
        "topic": "A protected room: accounts that have not agreed cannot post here.",
        "invite": [bot_user_id],
        "power_level_content_override": {"users": {bot_user_id: 100}},
    })
    await _create_room(hs, token, {
        "name": "Moderators",
        "room_alias_name": "moderators",
        "preset": "private_chat",
        "topic": "The management room: try !help, !warn, !restrict, !cases here.",
        "invite": [bot_user_id],
    })


async def demo(port: int = 8008) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rules-bot-demo-"))
    gate_port, gate_token = free_port(), random_token()
    hs = Homeserver(
        workdir / "synapse",
        port=_port_or_free(port),
        gate=(f"http://127.0.0.1:{gate_port}/antispam", gate_token),
    )
    service: Service | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        log.info("starting Synapse on %s (files in %s)", hs.url, workdir)
        await asyncio.to_thread(hs.start)
        bot = await hs.register("rulesbot", admin=True)
        moderator = await hs.register(MODERATOR, "moderator-password")
        users = [await hs.register(name, f"{name}-password") for name in SAMPLE_USERS]
        lobby = f"#lobby:{hs.server_name}"
        config_path = workdir / "bot.yaml"
        config_path.write_text(
            yaml.safe_dump(
                {
                    "homeserver": {
                        "url": hs.url,
                        "user_id": bot.user_id,
                        "access_token": bot.access_token,
                        "admin_token": bot.access_token,
                    },
                    "database": {"path": str(workdir / "bot.db")},
                    "gate": {"listen": f"127.0.0.1:{gate_port}", "token": gate_token},
                    "moderators": [moderator.user_id],
                    "protected_rooms": [lobby],
                    "management_room": f"#moderators:{hs.server_name}",
                    "language": "en",
                    "service": {"name": "Demo homeserver", "licence": "DEMO-0001"},
                }
            ),
            encoding="utf-8",
        )
        service = Service(load_config(config_path))
        await service.start()
        # The moderator creates the rooms once the gate answers (the module fails closed).
        await _create_rooms(hs, moderator.access_token, bot.user_id)
        await service.join_configured_rooms()
        accounts = "\n".join(f"    {u.user_id:<24} password: {u.password}" for u in users)
        print(
            f"""
Demo is running. Log in with any Matrix client (Element, nheko, gomuks, …):

  Homeserver URL: {hs.url}
  Accounts that must agree first:
{accounts}
  Moderator (never gated; the bot's moderator commands work in #moderators:{hs.server_name}):
    {moderator.user_id:<24} password: {moderator.password}

After the first login the bot ({bot.user_id}) opens a direct chat and sends the agreement.
Until you reply !agree (or react ✅), posting, inviting and creating rooms are refused with a
reason; join {lobby} and try. Files: {workdir}
Press Ctrl-C to stop everything.
""",
            flush=True,
        )
        await stop.wait()
        return 0
    finally:
        if service is not None:
            await service.stop()
        await asyncio.to_thread(hs.stop)
        shutil.rmtree(workdir, ignore_errors=True)
        log.info("demo stopped; removed %s", workdir)
