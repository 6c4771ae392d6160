"""The normalisation tables kept on disk: written once (0600), used at the next start, keyed by
their inputs, and ignored when the file is not what was written."""

import marshal
import stat

import pytest

from bot import foldcache
from bot.policy import normalize


@pytest.fixture
def fresh_tables():
    """Each test starts from tables this process built, and leaves them so."""
    built = normalize.built_tables()
    yield built
    normalize.preload_tables(built)


def test_the_first_start_keeps_the_tables_and_the_next_uses_them(tmp_path, fresh_tables):
    assert foldcache.preload(tmp_path) is False
    [kept] = list(tmp_path.glob("fold-tables-*.marshal"))
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert marshal.loads(kept.read_bytes()) == fresh_tables
    assert foldcache.preload(tmp_path) is True
    # The tables in use are the kept ones, and fold as the built ones do.
    assert normalize.built_tables() == fresh_tables
    assert normalize.fold("ＮＥＷＳ 國務院") == "news 国务院"


def test_a_file_that_is_not_what_was_written_is_ignored_and_replaced(tmp_path, fresh_tables):
    foldcache.preload(tmp_path)
    [kept] = list(tmp_path.glob("fold-tables-*.marshal"))
    kept.write_bytes(marshal.dumps(({1: 2}, {})))  # wrong shape: an int where a str belongs
    assert foldcache.preload(tmp_path) is False
    assert marshal.loads(kept.read_bytes()) == fresh_tables
    kept.write_bytes(b"\x00garbage")
    assert foldcache.preload(tmp_path) is False
    assert foldcache.preload(tmp_path) is True


def test_other_inputs_use_another_file_and_the_old_one_goes(tmp_path, fresh_tables, monkeypatch):
    foldcache.preload(tmp_path)
    [old] = list(tmp_path.glob("fold-tables-*.marshal"))
    monkeypatch.setattr(foldcache, "inputs_key", lambda: "0" * 32)
    assert foldcache.preload(tmp_path) is False
    assert [p.name for p in tmp_path.glob("fold-tables-*.marshal")] == ["fold-tables-" + "0" * 32 + ".marshal"]
    assert not old.exists()


def test_the_key_follows_the_code(monkeypatch, tmp_path):
    key = foldcache.inputs_key()
    assert key == foldcache.inputs_key()
    copy = tmp_path / "normalize.py"
    copy.write_bytes(open(normalize.__file__, "rb").read() + b"\n# changed\n")
    monkeypatch.setattr(normalize, "__file__", str(copy))
    assert foldcache.inputs_key() != key


def test_a_cache_that_cannot_be_written_never_stops_the_start(tmp_path, fresh_tables):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert foldcache.preload(blocked / "cache") is False
    assert normalize.fold("ＡＢＣ") == "abc"
