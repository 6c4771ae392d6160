"""bot.synapse.config: the module's config block, checked with errors that name the key; the
README's snippet is what the integration tests load."""

import string
from pathlib import Path

import pytest
import yaml

from bot.synapse.config import CALLBACKS, DEFAULT_FAIL, ConfigError, parse_config

SNIPPET = Path(__file__).resolve().parents[2] / "config" / "synapse-module-inprocess.yaml"
MINIMAL = {"bot_url": "http://127.0.0.1:8009", "token": "secret"}


def test_minimal_config_takes_the_defaults():
    config = parse_config(MINIMAL)
    assert config.bot_url == "http://127.0.0.1:8009" and config.token == "secret"
    assert config.language == "zh-CN" and config.max_staleness == {}
    assert dict(config.fail) == DEFAULT_FAIL
    assert set(DEFAULT_FAIL) == set(CALLBACKS)
    assert not config.fails_open("check_event_for_spam") and config.fails_open("user_may_join_room")


def test_fail_and_max_staleness_are_per_callback():
    config = parse_config({**MINIMAL, "fail": {"check_event_for_spam": "open"},
                           "max_staleness": {"check_event_for_spam": 600, "user_may_invite": 30.5}})
    assert config.fails_open("check_event_for_spam") and not config.fails_open("user_may_invite")
    assert config.max_staleness == {"check_event_for_spam": 600.0, "user_may_invite": 30.5}


@pytest.mark.parametrize("raw, names", [
    ({"token": "t"}, "bot_url is required"),
    ({"bot_url": "http://h:1/antispam", "token": "t"}, "bot_url must be http(s)://host:port with no path"),
    ({"bot_url": "ftp://h:1", "token": "t"}, "bot_url must be"),
    ({"bot_url": "http://h:1"}, "token is required"),
    ({**MINIMAL, "token": "  "}, "token is required"),
    ({**MINIMAL, "langauge": "en"}, "unknown key 'langauge'"),
    ({**MINIMAL, "language": "fr"}, "language must be one of"),
    ({**MINIMAL, "fail": {"check_event_for_spam": "sometimes"}}, "fail.check_event_for_spam must be 'open' or 'closed'"),
    ({**MINIMAL, "fail": {"check_username_for_spam": "open"}}, "fail: unknown callback 'check_username_for_spam'"),
    ({**MINIMAL, "fail": ["open"]}, "fail must be a mapping"),
    # A callback the module does not register: a fail mode for it would do nothing.
    ({**MINIMAL, "fail": {"user_may_create_room_alias": "closed"}}, "fail: unknown callback 'user_may_create_room_alias'"),
    ({**MINIMAL, "max_staleness": {"user_may_invite": -1}}, "max_staleness.user_may_invite must be a number"),
    ({**MINIMAL, "max_staleness": {"user_may_invite": True}}, "max_staleness.user_may_invite must be a number"),
    ({**MINIMAL, "poll_timeout": 0.5}, "poll_timeout must be a number of seconds >= 1"),
    ({**MINIMAL, "ratecap_timeout": "fast"}, "ratecap_timeout must be a number"),
    ({**MINIMAL, "consent_timeout": 0}, "consent_timeout must be a number of seconds >= 0.01"),
    ("bot_url: x", "must be a mapping"),
])
def test_bad_config_is_refused_naming_the_key(raw, names):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert names in str(caught.value)


def snippet_modules(**values: str) -> list:
    text = string.Template(SNIPPET.read_text(encoding="utf-8")).substitute(values)
    return yaml.safe_load(text)["modules"]


def test_the_readme_snippet_is_valid_and_is_what_the_integration_tests_load():
    from tests.integration.harness import inprocess_modules

    modules = snippet_modules(BOT_URL="http://127.0.0.1:8009", BOT_TOKEN="secret", LANGUAGE="en")
    assert [m["module"] for m in modules] == ["bot.synapse.RulesModule"]
    config = parse_config(modules[0]["config"])
    assert config.language == "en" and dict(config.fail) == DEFAULT_FAIL
    assert inprocess_modules("http://127.0.0.1:8009", "secret") == modules
