"""A throw-away PostgreSQL cluster for the tests: initdb into a temp folder, a unix socket only,
fsync off, stopped (and removed) at the end of the session.

The server is Debian's package (``postgresql-15``, /usr/lib/postgresql/<n>/bin), which the
machines this project runs and tests on have installed; a PyPI wheel that ships the server would
be a ~30 MB download on every fresh venv for the same binaries. initdb refuses to run as root, so
as root the cluster runs as ``nobody`` (runuser, no shell or home needed) in a folder it owns.
Every test gets its own database, a copy of a migrated template (CREATE DATABASE … TEMPLATE):
about 30 ms instead of migrating each time.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

TEMPLATE = "bot_template"


def server_bin() -> Path | None:
    """The folder of initdb/pg_ctl: Debian's newest installed server, or one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pgt."))  # short: a socket path has ~100 bytes
        self._names = itertools.count(1)
        self._user: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self._user = ["runuser", "-u", "nobody", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._user, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        _stop_orphans(self)
        (self.root / "owner").write_text(str(os.getpid()))
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        options = (f"-F -k {self.root} -c listen_addresses='' -c fsync=off -c synchronous_commit=off"
                   " -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def stop_orphan(self, root: Path) -> None:
        """Stop the cluster in ``root`` (of a test run killed before it could) and remove it."""
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass  # not running any more
        shutil.rmtree(root, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.root}"

    async def create_template(self) -> None:
        """A database migrated to the latest version, for ``fresh`` to copy."""
        import asyncpg

        from bot.store.db import Database

        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()
        db = await Database.open(self.dsn(TEMPLATE))
        await db.close()

    async def fresh(self, migrated: bool = True) -> str:
        """A new database (a copy of the migrated template, or empty) and its DSN."""
        import asyncpg

        name = f"t{os.getpid()}_{next(self._names)}"
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE if migrated else 'template0'}")
        finally:
            await conn.close()
        return self.dsn(name)


def _stop_orphans(cluster: Cluster) -> None:
    """A test run killed by a timeout never reaches its cleanup: its cluster would run on. Each
    cluster records the test process that owns it; one whose owner is gone is stopped here."""
    for root in Path(tempfile.gettempdir()).glob("pgt.*"):
        try:
            owner = int((root / "owner").read_text())
        except (OSError, ValueError):
            continue  # being set up right now, or not ours
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            cluster.stop_orphan(root)
        except PermissionError:
            pass  # alive, another user's
