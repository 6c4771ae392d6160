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


# -- --dry-run -------------------------------------------------------------------------------
#
# Every command that changes something runs here against the real services and a real database,
# with fakes only at the Matrix boundary (they record every call but the reads). A dry run must
# answer what it would do and leave the database (a dump of every table), the audit head file,
# the bot's memory and Matrix untouched; the same command without --dry-run must still work.

import copy  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from tests.unit import dbview  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from bot.accounts import PublicAccounts  # noqa: E402
from bot.agreement import AgreementDocument, AgreementService  # noqa: E402
from bot.commands import accounts as account_commands  # noqa: E402
from bot.commands import agreement as agreement_commands  # noqa: E402
from bot.commands import records as record_commands  # noqa: E402
from bot.commands import sanctions as sanction_commands  # noqa: E402
from bot.commands import identity as identity_commands  # noqa: E402
from bot.identity.keys import IdentityKeys  # noqa: E402
from bot.identity.service import Identity  # noqa: E402
from bot.commands.context import Services  # noqa: E402
from bot.commands.dispatch import Dispatcher  # noqa: E402
from bot.commands.registry import DRY_RUN  # noqa: E402
from bot.config import SHIPPED_DIR, Settings  # noqa: E402
from bot.i18n import Translator  # noqa: E402
from bot.news import News  # noqa: E402
from bot.policy import PolicyState  # noqa: E402
from bot.reports import Reports  # noqa: E402
from bot.sanctions import Sanctions  # noqa: E402

T0 = 1_800_000_000_000
MOD, BOT, BOB, PUB, NEWBIE = "@mod:hs", "@bot:hs", "@bob:hs", "@pub:hs", "@newbie:hs"
MGMT, DM, LOBBY, CHAN = "!mgmt:hs", "!dm:hs", "!lobby:hs", "!chan:hs"
BAD_EVENT = {"event_id": "$bad", "room_id": LOBBY, "sender": BOB, "type": "m.room.message",
             "origin_server_ts": T0, "content": {"msgtype": "m.text", "body": "buy now"}}
RULES_FILE = SHIPPED_DIR / "rules.yaml"
ALL_COMMANDS = [*agreement_commands.COMMANDS, *sanction_commands.COMMANDS, *record_commands.COMMANDS,
                *account_commands.COMMANDS, *identity_commands.COMMANDS]
READS = {"resolve", "get_event", "room_state", "directory_visibility"}


class Boundary:
    """A fake at the Matrix boundary: reads answer, every other call is recorded as a write."""

    def __init__(self, writes: list, **reads):
        self._writes, self._reads = writes, reads
        self.room_id = MGMT

    def __getattr__(self, name):
        if name in self._reads:
            return self._reads[name]

        def call(*args, **kwargs):
            self._writes.append((name, args))
            return Written()
        return call


class Written:
    """What a recorded write returns: awaitable (an async method) or ignored (a sync one)."""

    def __await__(self):
        if False:
            yield
        return "$written"


def channel_state():
    return [
        {"type": "m.room.create", "state_key": "", "sender": PUB, "content": {"room_version": "10"}},
        {"type": "m.room.join_rules", "state_key": "", "sender": PUB, "content": {"join_rule": "public"}},
        {"type": "m.room.power_levels", "state_key": "", "sender": PUB,
         "content": {"users": {PUB: 100}, "state_default": 50}},
        *({"type": "m.room.member", "state_key": m, "sender": m, "content": {"membership": "join"}}
          for m in (PUB, BOT)),
    ]


class World:
    """The services wired as in bot.service, a dispatcher, and what reached the boundary."""

    def __init__(self, store, tmp_path, language="en", **config):
        # Applicants need no verification here unless a test asks (tests/unit/test_identity_commands.py).
        config.setdefault("identity", {"required_for": []})
        self.store, self.tmp_path, self.writes, self.replies = store, tmp_path, [], []
        self.state = PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1", moderators=frozenset({MOD}))
        self.settings = settings = Settings(homeserver={"url": "http://hs.test", "user_id": BOT, "password": "x" * 16},
                                            gate={"enabled": False}, language=language, **config)

        async def resolve(room):
            return room

        async def get_event(room_id, event_id):
            return dict(BAD_EVENT, event_id=event_id)

        async def room_state(room_id):
            return channel_state()

        async def directory_visibility(room_id):
            return "public"

        matrix = Boundary(self.writes, resolve=resolve, get_event=get_event, room_state=room_state,
                          directory_visibility=directory_visibility)
        onboarding, room_mode, management = Boundary(self.writes), Boundary(self.writes), Boundary(self.writes)
        self.now = T0  # a test may move the clock
        t, clock = Translator(language), lambda: self.now
        sanctions = Sanctions(store, self.state, matrix, room_mode, onboarding, None, management, t, settings, clock)
        reports = Reports(store, matrix, sanctions, onboarding, None, management, t, settings, clock)
        accounts = PublicAccounts(store, self.state, matrix, onboarding, management, t, settings, clock,
                                  lambda *a: None)
        accounts.protected = lambda: {LOBBY}

        async def accepted(*args):
            self.writes.append(("accepted", args))

        agreements = AgreementService(store, self.state, AgreementDocument("1", "Be kind.", "0" * 64), clock, accepted)
        news = News(self.state, matrix, settings, None, lambda: {LOBBY})
        registry = Registry(ALL_COMMANDS)
        self.identity = Identity(store, self.state, IdentityKeys(b"k" * 32), settings, clock)
        self.identity.management = management
        self.state.identity_required_for = frozenset(settings.identity.required_for)
        self.state.identity_instructions = self.identity.how_to_verify(language)
        services = Services(t, self.state, store, agreements, onboarding, registry, sanctions, matrix, clock, reports,
                            accounts, news, rules_path=RULES_FILE, identity=self.identity)
        self.dispatcher = Dispatcher(registry, services, Boundary(self.replies))
        self._events = 0

    async def send(self, body, sender=MOD):
        """A command as the bot receives it; the bot's answer."""
        self._events += 1
        self.last_event = event_id = f"$cmd{self._events}"
        event = {"event_id": event_id, "sender": sender, "type": "m.room.message",
                 "content": {"msgtype": "m.text", "body": body}}
        room = MGMT if sender == MOD else DM
        before = len(self.replies)
        assert await self.dispatcher.handle(room, event, answer_unknown=True, moderator_place=sender == MOD)
        if len(self.replies) == before + 1:  # a dispatcher that sends its answers itself
            return self.replies[-1][1][1]
        # A dispatcher that journals its answer, to be sent by the effects executor.
        row = await self.store.db.fetchone("SELECT payload FROM effects WHERE idempotency_key = ?",
                                           (f"reply/{event_id}",))
        return "" if row is None else json.loads(row[0])["text"]  # !rules answers with the agreement itself

    async def everything(self, answered=()):
        """Every table's rows, the files beside the database, the bot's memory and Matrix writes.

        ``answered``: command events whose own bookkeeping is left out — the mark that the event
        was handled and its answer queued for sending: what every command, a dry run too, leaves.
        """
        tables = await dbview.rows(self.store.db)
        tables["handled_events"] = [r for r in tables["handled_events"] if r["event_id"] not in answered]
        tables["effects"] = [r for r in tables["effects"] if r["idempotency_key"] not in {f"reply/{e}" for e in answered}]
        schema = await dbview.schema(self.store.db)
        files = {p.name: p.read_bytes() for p in self.tmp_path.iterdir()
                 if p.is_file() and (not p.name.startswith("bot.db") or p.name.endswith(".audit-head"))}
        memory = {k: copy.deepcopy(v) for k, v in vars(self.state).items() if k != "news_rules"}
        return tables, schema, files, memory, id(self.state.news_rules), list(self.writes)


async def confirm_code(world):
    answer = await world.send(f"!close {BOB} abuse")
    return re.search(r"!confirm (\w+)", answer).group(1)


async def seed_report(world):
    await world.send(f"!report https://matrix.to/#/{LOBBY}/$bad spam", sender=NEWBIE)


async def seed_appeal(world):
    await world.send(f"!restrict {BOB} 1h spam")
    await world.send("!appeal 1 it was a joke", sender=BOB)


async def seed_account(world):
    await world.send("!apply public news-website Daily News", sender=PUB)
    await world.send("!approve 1")


async def seed_channel(world):
    await seed_account(world)
    await world.send(f"!channel add {CHAN}", sender=PUB)


async def nothing(world):
    return None


async def seed_verified(world):
    await world.send("!agree", sender=NEWBIE)  # an account the bot knows
    await world.send(f"!verify {NEWBIE} id-card seen in person")


# (what is there before, the command (%s: the confirmation code), who sends it, a step the dry run names)
STATE_CHANGING = {
    "warn": (nothing, f"!warn {BOB} rude", MOD, "record a new case: warning @bob:hs"),
    "restrict": (nothing, f"!restrict {BOB} 2h --rate 3/1h spam", MOD, "hold back @bob:hs's posts until"),
    "suspend": (nothing, f"!suspend {BOB} permanent spam", MOD, "suspend @bob:hs's updates until lifted: no posts"),
    "close": (nothing, f"!close {BOB} abuse --erase", MOD, "erase the account's data as it is deactivated"),
    "confirm": (confirm_code, "!confirm %s", MOD, "close the account of @bob:hs, as @mod:hs asked"),
    "lift": (lambda w: w.send(f"!restrict {BOB} 1h spam"), "!lift 1 mistake", MOD,
             "record the end of case #1 (posting restriction of @bob:hs) as lifted"),
    "report": (nothing, f"!report https://matrix.to/#/{LOBBY}/$bad spam", NEWBIE,
               "record your report of @bob:hs's message in !lobby:hs"),
    "resolve": (seed_report, f"!resolve 1 warn {BOB} spam", MOD, "mark report #1 as actioned by this case"),
    "appeal": (lambda w: w.send(f"!warn {BOB} rude"), "!appeal 1 I was quoting", BOB, "record your appeal of case #1"),
    "grant": (seed_appeal, "!grant 1 fair point", MOD, "record the end of case #1"),
    "deny": (seed_appeal, "!deny 1 no", MOD, "record appeal #1 (case #1) as denied"),
    "export": (lambda w: w.send(f"!warn {BOB} rude"), "!export cases", MOD,
               "upload cases-all.csv here: 1 cases row(s)"),
    "apply": (nothing, "!apply public news-website Daily News", PUB, "record your application: public account"),
    "approve": (lambda w: w.send("!apply public news-website Daily News", sender=PUB), "!approve 1 welcome", MOD,
                "record filing IM2027-02-000001 for @pub:hs"),
    "reject": (lambda w: w.send("!apply public news-website Daily News", sender=PUB), "!reject 1 no licence", MOD,
               "reject application #1; reason: no licence"),
    "revoke": (seed_account, f"!revoke {PUB} fraud", MOD, "revoke the public account of @pub:hs (filings IM2027"),
    "channel": (seed_account, f"!channel add {CHAN}", PUB, f"make {CHAN} a channel of your public account"),
    "reload": (nothing, "!reload", MOD, "put the rules file's 3 news rule(s) and 5 repost source(s) in force"),
    "agree": (nothing, "!agree", NEWBIE, "record your acceptance of agreement version 1"),
    "rules": (nothing, "!rules", NEWBIE, "send the service agreement (version 1) in this chat"),
    "verify": (lambda w: w.send("!agree", sender=NEWBIE), f"!verify {NEWBIE} id-card seen in person", MOD,
               "record a manual verification of @newbie:hs: method id-card, level manual; note: seen in person"),
    "unverify": (seed_verified, f"!unverify {NEWBIE} card was forged", MOD,
                 "record that @newbie:hs is no longer verified (revoking the manual check verification)"),
}


def test_every_command_that_changes_state_has_a_preview_and_is_tested():
    changing = {c.name for c in ALL_COMMANDS if c.changes_state}
    assert changing == set(STATE_CHANGING)
    # What is left only reads; a new command that writes must join the table above.
    assert {c.name for c in ALL_COMMANDS} - changing == {
        "status", "help", "case", "history", "cases", "reports", "stats", "appeals", "application", "whois",
        "applications",
    }


@pytest.mark.parametrize("name", sorted(STATE_CHANGING))
async def test_a_dry_run_answers_what_would_happen_and_changes_nothing(store, tmp_path, name):
    seed, body, sender, step = STATE_CHANGING[name]
    world = World(store, tmp_path)
    code = await seed(world)
    command = body % code if "%s" in body else body
    before = await world.everything()
    # The flag is read anywhere in the arguments: first, and last.
    head, _, rest = command.partition(" ")
    dry_runs = []
    for dry in (f"{head} --{DRY_RUN} {rest}".strip(), f"{command} --{DRY_RUN}"):
        answer = await world.send(dry, sender=sender)
        dry_runs.append(world.last_event)
        assert answer.startswith(
            f"Dry run of !{name}: nothing was recorded, sent or changed. Without --dry-run it would:\n• ")
        assert step in answer, answer
        assert await world.everything(answered=dry_runs) == before
    real = await world.send(command, sender=sender)
    assert not real.startswith("Dry run") and "Something went wrong" not in real, real
    assert await world.everything(answered=[*dry_runs, world.last_event]) != before


async def test_a_dry_run_is_refused_where_the_command_would_be(store, tmp_path):
    world = World(store, tmp_path)
    await world.send(f"!warn {BOB} rude")
    before, answered = await world.everything(), []
    t = Translator("en")
    for body, sender, expected in [
        ("!lift 9 x --dry-run", MOD, "There is no case #9."),
        ("!lift 1 x --dry-run", MOD, "Case #1 is a warning: there is nothing in force to lift."),
        (f"!warn {MOD} x --dry-run", MOD, f"{MOD} is a moderator; moderators cannot be the target of a measure."),
        ("!confirm ABC123 --dry-run", MOD,
         "No pending closure has the code ABC123 (it may have expired or been used). Send !close again."),
        ("!grant 4 x --dry-run", MOD, t("appeal.no_such", appeal=4)),
        ("!resolve 2 dismiss x --dry-run", MOD, t("report.no_such", report=2)),
        ("!resolve 2 frobnicate --dry-run", MOD, t("report.resolve_how", report=2)),
        ("!appeal 1 no --dry-run", NEWBIE, t("appeal.not_yours", case=1)),
        ("!approve 1 --dry-run", MOD, t("account.no_such", application=1)),
        ("!revoke @nobody:hs x --dry-run", MOD, t("account.not_public", user="@nobody:hs")),
        (f"!channel add {CHAN} --dry-run", PUB, t("account.not_public", user=PUB)),
        ("!apply public astrology Stars --dry-run", PUB, t("account.unknown_category", category="astrology",
                                                          categories=", ".join(world_categories()))),
        ("!export cases 2026-13-01 --dry-run", MOD, t("export.bad_date", date="2026-13-01")),
    ]:
        assert await world.send(body, sender=sender) == expected, body
        answered.append(world.last_event)
    assert await world.everything(answered=answered) == before


def world_categories():
    from bot.config import DEFAULT_CATEGORIES
    return DEFAULT_CATEGORIES


async def test_resolve_passes_a_sanctions_own_flags_and_a_dry_run_through(store, tmp_path):
    world = World(store, tmp_path)
    await seed_report(world)
    before = await world.everything()
    answer = await world.send(f"!resolve 1 close {BOB} scam --erase --dry-run")
    answered = [world.last_event]
    assert answer.startswith("Dry run of !resolve: ")
    assert "record a closure request: closure @bob:hs (erase requested) (with evidence); reason: scam" in answer
    assert "once the closure is confirmed, mark report #1 as actioned by it" in answer
    answer = await world.send(f"!resolve 1 dismiss not spam --{DRY_RUN}")
    answered.append(world.last_event)
    assert "mark report #1 as dismissed; reason: not spam" in answer
    assert await world.everything(answered=answered) == before
    # Without the flag the closure is asked for, with the erase the moderator gave.
    answer = await world.send(f"!resolve 1 close {BOB} scam --erase")
    assert "send !confirm" in answer and "(erase requested)" in answer


async def test_read_only_commands_answer_as_usual_and_say_so(store, tmp_path):
    world = World(store, tmp_path)
    await world.send(f"!warn {BOB} rude")
    before = await world.everything()
    plain = await world.send("!case 1")
    answered = [world.last_event]
    dry = await world.send("!case 1 --dry-run")
    answered.append(world.last_event)
    assert dry == plain + "\n\n(--dry-run: !case only reads, so this is its usual answer; nothing was changed.)"
    assert await world.everything(answered=answered) == before


def test_usage_and_help_show_the_flag_on_the_commands_that_take_it():
    registry = Registry(ALL_COMMANDS)
    assert registry.find("lift").usage() == "!lift <case> <reason…> [--dry-run]"
    assert registry.find("close").usage() == "!close <user> <reason…> [--erase] [--blacklist] [--dry-run]"
    assert registry.find("resolve").usage() == "!resolve <report> <action…> [--dry-run]"
    assert registry.find("case").usage() == "!case <case>"
    assert registry.parse("!case 3 --dry-run").flags == {DRY_RUN}  # accepted, answered as usual
    with pytest.raises(UsageError):
        registry.parse("!lift 3 x --dry-run=yes")


async def test_help_explains_the_flag_in_both_languages():
    for language in ("en", "zh-CN"):
        t = Translator(language)
        state = PolicyState(bot_user_id=BOT, server_name="hs", agreement_version="1", moderators=frozenset({MOD}))
        services = SimpleNamespace(t=t, state=state, registry=Registry(ALL_COMMANDS))
        ctx = SimpleNamespace(t=t, services=services, sender=MOD)
        text = await agreement_commands.help_(ctx)
        assert t("help.dry_run") in text and "!warn <user> <reason…> [--dry-run]" in text
