"""Config: good files, bad keys and values named in the error, env overrides, and the CLI."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.config import ConfigError, load_config

GOOD = {
    "homeserver": {"url": "http://127.0.0.1:8008", "user_id": "@bot:hs.test", "password": "secret-password"},
    "gate": {"listen": "127.0.0.1:8765", "token": "t" * 24},
    "moderators": ["@mod:hs.test"],
    "protected_rooms": ["!room:hs.test", "#lobby:hs.test"],
    "language": "en",
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_good_config_loads_with_defaults_and_relative_paths(tmp_path):
    settings = load_config(write(tmp_path, GOOD))
    assert settings.homeserver.server_name == "hs.test"
    assert settings.gate.port == 8765
    assert settings.database.path == tmp_path / "bot.db"
    assert settings.agreement_path().name == "agreement.en.md"
    assert settings.agreement.version == "1"


def test_secrets_never_show_in_repr(tmp_path):
    settings = load_config(write(tmp_path, GOOD))
    assert "secret-password" not in repr(settings) and "t" * 24 not in repr(settings)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"homeserver": {**GOOD["homeserver"], "colour": "red"}}, "homeserver.colour: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"homeserver": {"url": "http://x", "user_id": "@b:x"}}, "homeserver: set homeserver.password"),
        ({"homeserver": {**GOOD["homeserver"], "url": "ftp://x"}}, "homeserver.url: 'ftp://x' is not an http(s) URL"),
        ({"homeserver": {**GOOD["homeserver"], "user_id": "bot"}}, "homeserver.user_id: 'bot' is not a Matrix user ID"),
        ({"language": "fr"}, "language: Input should be 'zh-CN' or 'en'"),
        ({"gate": {"listen": "nowhere", "token": "t" * 24}}, "gate.listen: 'nowhere' is not host:port"),
        ({"gate": {"listen": "127.0.0.1:1"}}, "gate.token must be set"),
        ({"moderators": ["mod"]}, "moderators.0: 'mod' is not a Matrix user ID"),
        ({"protected_rooms": ["lobby"]}, "protected_rooms.0: 'lobby' is not a room ID"),
        ({"agreement": {"file": "missing.md"}}, "agreement.file:"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, {**GOOD, **change}))
    assert message in str(caught.value)


def test_missing_required_section(tmp_path):
    with pytest.raises(ConfigError, match="homeserver: required key is missing"):
        load_config(write(tmp_path, {"language": "en"}))


def test_not_yaml_and_not_a_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("homeserver: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BOT__HOMESERVER__URL", "https://matrix.example.org")
    monkeypatch.setenv("BOT__LANGUAGE", "zh-CN")
    monkeypatch.setenv("BOT__GATE__ENABLED", "false")
    settings = load_config(write(tmp_path, GOOD))
    assert settings.homeserver.url == "https://matrix.example.org"
    assert settings.homeserver.user_id == "@bot:hs.test"  # untouched keys keep the file's value
    assert settings.language == "zh-CN"
    assert settings.gate.enabled is False


def test_bad_environment_override_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("BOT__HOMESERVER__COLOUR", "red")
    with pytest.raises(ConfigError, match="homeserver.colour: unknown key"):
        load_config(write(tmp_path, GOOD))


def test_shipped_example_config_is_valid(monkeypatch):
    example = Path(__file__).resolve().parents[2] / "config" / "bot.example.yaml"
    settings = load_config(example)
    assert settings.language == "zh-CN"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=60)


def test_check_config_cli(tmp_path):
    ok = _cli("check-config", "--config", str(write(tmp_path, GOOD)))
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = _cli("check-config", "--config", str(write(tmp_path, {**GOOD, "language": "fr"})))
    assert bad.returncode == 2
    assert "language:" in bad.stderr and "Traceback" not in bad.stderr
