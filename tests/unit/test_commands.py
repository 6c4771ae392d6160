"""Command parsing: English names, Chinese aliases, typed parameters, flags, usage errors."""

import pytest

from bot.commands.agreement import COMMANDS
from bot.commands.registry import Command, Param, ParamKind, Registry, UnknownCommand, UsageError


async def _noop(ctx):
    return None


@pytest.fixture
def registry() -> Registry:
    extra = Command(
        "warn", ("警告",), "cmd.help.summary", _noop,
        params=(Param("user", ParamKind.USER_ID), Param("reason", ParamKind.TEXT)),
        flags=("dry-run",), moderator_only=True,
    )
    return Registry([*COMMANDS, extra])


@pytest.mark.parametrize(
    "body, name",
    [
        ("!agree", "agree"), ("!同意", "agree"), ("!AGREE", "agree"), ("  !agree  ", "agree"),
        ("!rules", "rules"), ("!规则", "rules"), ("!status", "status"), ("!状态", "status"),
        ("!help", "help"), ("!帮助", "help"),
    ],
)
def test_english_names_and_chinese_aliases(registry, body, name):
    assert registry.parse(body).command.name == name


@pytest.mark.parametrize("body", ["hello", "", "!", "!!agree", "agree!", "I said !agree"])
def test_text_that_is_not_a_command(registry, body):
    assert registry.parse(body) is None


def test_unknown_command_is_reported_with_its_name(registry):
    with pytest.raises(UnknownCommand) as caught:
        registry.parse("!frobnicate now")
    assert caught.value.name == "!frobnicate"


def test_reply_fallback_is_stripped_before_parsing(registry):
    body = "> <@alice:hs> some quoted text\n> more\n\n!agree"
    assert registry.parse(body).command.name == "agree"


def test_typed_parameters_and_rest_text(registry):
    invocation = registry.parse("!警告 @bob:hs.test spamming the  lobby --dry-run")
    assert invocation.command.name == "warn"
    assert invocation.args == {"user": "@bob:hs.test", "reason": "spamming the lobby"}
    assert invocation.flags == {"dry-run"}


@pytest.mark.parametrize(
    "body",
    ["!warn", "!warn bob spamming", "!warn @bob:hs.test", "!warn @bob:hs.test x --force", "!agree now"],
    ids=["no-args", "not-a-user-id", "missing-reason", "unknown-flag", "extra-args"],
)
def test_bad_arguments_give_usage(registry, body):
    with pytest.raises(UsageError) as caught:
        registry.parse(body)
    assert caught.value.command.usage().startswith("!" + caught.value.command.name)


def test_usage_text_lists_parameters_and_flags(registry):
    assert registry.parse("!warn @a:b c").command.usage() == "!warn <user> <reason…> [--dry-run]"


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="declared twice"):
        Registry([*COMMANDS, Command("agree2", ("同意",), "cmd.help.summary", _noop)])


def test_sanction_commands_parse_typed_arguments():
    from bot.commands.sanctions import COMMANDS as SANCTIONS
    from bot.policy.sanctions import Rate

    registry = Registry([*COMMANDS, *SANCTIONS])
    restrict = registry.parse("!限制 @bob:hs.test 12h --rate 3/1h spamming links")
    assert restrict.command.name == "restrict"
    assert restrict.args == {"user": "@bob:hs.test", "duration": 12 * 3_600_000, "rate": Rate(3, 3_600_000),
                             "reason": "spamming links"}
    assert registry.parse("!suspend @bob:hs.test permanent x").args["duration"] is None
    assert registry.parse("!lift #12 appeal granted").args["case"] == 12
    assert registry.parse("!close @bob:hs.test abuse --erase").flags == {"erase"}
    assert registry.parse("!cases active").args == {"filter": "active"}
    assert registry.parse("!restrict @bob:hs.test 1h --rate=2/d x").args["rate"] == Rate(2, 86_400_000)


@pytest.mark.parametrize(
    "body",
    [
        "!restrict @bob:hs.test 5s spam",
        "!restrict @bob:hs.test soon spam",
        "!restrict bob 1h spam",
        "!restrict @bob:hs.test 1h --rate lots spam",
        "!restrict @bob:hs.test 1h spam --rate",
        "!suspend @bob:hs.test 1h",
        "!lift twelve reason",
        "!cases all",
        "!warn @bob:hs.test",
    ],
)
def test_sanction_commands_with_bad_arguments_give_usage(body):
    from bot.commands.sanctions import COMMANDS as SANCTIONS

    with pytest.raises(UsageError):
        Registry([*COMMANDS, *SANCTIONS]).parse(body)


def test_only_report_and_appeal_are_open_to_everyone_among_the_record_commands():
    # What moderators see (reports, cases, histories, exports) never answers anyone else.
    from bot.commands.records import COMMANDS as RECORDS
    from bot.commands.sanctions import COMMANDS as SANCTIONS

    open_to_all = {c.name for c in [*RECORDS, *SANCTIONS] if not c.moderator_only}
    assert open_to_all == {"report", "appeal"}
