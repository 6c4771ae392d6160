"""The normalisation tables kept on disk between runs, to shorten the restart window.

Building the folding tables (bot.policy.normalize: every code point through NFKD, OpenCC and
TS #39) costs about 0.6 s of pure Python at each start, before the gate can judge any text; and
while the bot restarts, the shipped module config refuses every post on the server. The tables
are a pure function of normalize.py and the data it reads, so they are kept in a file whose name
is a hash of exactly those inputs: the code's own bytes (the whole policy package), the installed confusables and OpenCC
packages (each file's path, size and modification time), the Unicode database's version and the
interpreter's. Any change builds them afresh; loading the file takes a few milliseconds.

The file is written with ``marshal`` (plain dicts and strings only: nothing in it can run) with
mode 0600, and its shape is checked when it is read; a file that does not pass is ignored.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import marshal
import os
import sys
import tempfile
import unicodedata
from pathlib import Path

log = logging.getLogger(__name__)

DATA_PACKAGES = ("confusable_homoglyphs", "opencc")


def cache_dir() -> Path:
    """``$BOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/rulesbot``, else ``~/.cache/rulesbot``."""
    explicit = os.environ.get("BOT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rulesbot"


def inputs_key() -> str:
    """A hash of everything the tables are built from."""
    from bot.policy import normalize

    digest = hashlib.sha256()
    # The whole policy package, not only normalize.py: a table helper moved to a sibling module
    # still changes the key (about 100 KB to hash).
    here = Path(normalize.__file__)
    digest.update(here.read_bytes())
    for source in sorted(here.parent.glob("*.py")):
        if source != here:
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    digest.update(f"{unicodedata.unidata_version}|{sys.version}|{sys.maxunicode}".encode())
    for package in DATA_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            digest.update(f"{package}: missing".encode())
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for folder, dirs, files in sorted(os.walk(root)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                stat = os.stat(os.path.join(folder, name))
                digest.update(f"{os.path.relpath(os.path.join(folder, name), root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _valid(tables: object) -> bool:
    if not isinstance(tables, tuple) or len(tables) != 2:
        return False
    for table in tables:
        if not isinstance(table, dict):
            return False
        if not all(type(k) is int and (v is None or type(v) is str) for k, v in table.items()):
            return False
    return True


def preload(directory: Path | None = None) -> bool:
    """Give normalize the kept tables if there are any for these inputs, else build them and
    keep them for the next start. True if the kept ones were used. Never raises: without a
    cache the tables are built as before."""
    from bot.policy import normalize

    try:
        folder = directory or cache_dir()
        path = folder / f"fold-tables-{inputs_key()}.marshal"
        try:
            tables = marshal.loads(path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            tables = None
        if tables is not None and _valid(tables):
            normalize.preload_tables(tables)
            return True
        _keep(folder, path, marshal.dumps(normalize.built_tables()))
    except Exception:  # a cache must never stop the bot from starting
        log.warning("the normalisation tables could not be cached; they are built at each start", exc_info=True)
    return False


def _keep(folder: Path, path: Path, data: bytes) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in folder.glob("fold-tables-*.marshal"):
        if stale != path:
            stale.unlink(missing_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".fold-tables-")  # created 0600
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
