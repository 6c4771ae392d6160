"""Current-affairs news: rules validation, classification, reposts, and the tier rule in decide()."""

import pytest

from bot.config import SHIPPED_CONFIG_DIR, load_news_rules
from bot.policy import Action, ActionKind, PolicyState, Reason, decide
from bot.policy.news import NewsRules, RulesError
from bot.policy.state import PublicAccount

NOW = 1_790_000_000_000
RULES = {
    "news": [
        {"id": "organs", "keywords": ["国务院", "State Council", "state"]},
        {"id": "conference", "regex": [r"press\s+conference"]},
        {"id": "agencies", "domains": ["news.cn"]},
    ],
    "repost": {"sources": ["xinhuanet.com"], "markers": ["转载自", "RT @"], "quote_replies": True, "identical_days": 7},
}


@pytest.fixture
def rules() -> NewsRules:
    return NewsRules.from_mapping(RULES)


@pytest.mark.parametrize(
    "text, rule",
    [
        ("今天国务院召开会议", "organs"),
        ("THE STATE COUNCIL decided", "organs"),
        ("a Press  Conference today", "conference"),
        ("read https://www.news.cn/politics/1.htm", "agencies"),
        ("read https://news.cn", "agencies"),
    ],
)
def test_news_is_recognised_by_keyword_regex_and_domain(rules, text, rule):
    match = rules.classify(text)
    assert match is not None and match.rule_id == rule and not match.repost


@pytest.mark.parametrize("text", ["hello there", "fakenews.cn.example.org is not news.cn", "国务"])
def test_other_text_is_not_news(rules, text):
    assert rules.classify(text) is None


def test_longest_keyword_names_the_rule():
    rules = NewsRules.from_mapping({"news": [{"id": "short", "keywords": ["state"]},
                                             {"id": "long", "keywords": ["state council"]}]})
    assert rules.classify("the state council met").rule_id == "long"


@pytest.mark.parametrize(
    "text, quotes, seen",
    [
        ("国务院 转载自 某网站", False, False),
        ("RT @someone: State Council says", False, False),
        ("State Council https://xinhuanet.com/a", False, False),
        ("> <@a:hs> State Council\n\nagreed", True, False),
        ("State Council met today", False, True),
    ],
    ids=["marker", "rt-marker", "source-link", "quoting-reply", "identical-text"],
)
def test_what_makes_a_repost(rules, text, quotes, seen):
    assert rules.classify(text, quotes_a_reply=quotes, seen_from_other=seen).repost


@pytest.mark.parametrize(
    "data, message",
    [
        ({"news": [{"keywords": ["x"]}]}, "needs an id"),
        ({"news": [{"id": "a", "keywords": ["x"]}, {"id": "a", "keywords": ["y"]}]}, "declared twice"),
        ({"news": [{"id": "a"}]}, "needs keywords, regex or domains"),
        ({"news": [{"id": "a", "regex": ["(unclosed"]}]}, "not a valid regular expression"),
        ({"news": [{"id": "a", "keywords": "x"}]}, "keywords must be a list"),
        ({"repost": {"identical_days": -1}}, "identical_days"),
        ({"colour": 1}, "unknown top-level key"),
        ([], "must hold a mapping"),
    ],
)
def test_invalid_rules_are_refused_with_a_clear_error(data, message):
    with pytest.raises(RulesError, match=message):
        NewsRules.from_mapping(data)


def test_shipped_rules_load():
    rules = load_news_rules(SHIPPED_CONFIG_DIR / "rules.yaml")
    assert rules.classify("国务院印发通知").rule_id == "state-organs"


@pytest.fixture
def state(rules) -> PolicyState:
    s = PolicyState(bot_user_id="@bot:hs", server_name="hs", agreement_version="1", news_rules=rules)
    for user in ("@plain:hs", "@pub:hs", "@rep:hs", "@other:hs"):
        s.record_acceptance(user, "1")
    s.public_accounts["@pub:hs"] = PublicAccount("news-organisation", "Daily", "F-1", "publisher", "F-2")
    s.public_accounts["@rep:hs"] = PublicAccount("enterprise", "Corp", "F-3", "reposter", "F-4")
    s.news_scope.add("!square:hs")
    return s


def post(user, text, room="!square:hs", quotes=False):
    return Action(ActionKind.SEND_EVENT, user, room_id=room, event_type="m.room.message", body=text, quotes_reply=quotes)


def test_news_from_an_untiered_account_is_refused_naming_the_rule_and_tier(state):
    refused = decide(post("@plain:hs", "国务院今日发布"), state, NOW)
    assert refused.reason is Reason.NEWS_TIER_MISSING
    assert refused.params["rule"] == "organs" and refused.params["tier"] == "publisher"


def test_publisher_may_publish_and_repost(state):
    assert decide(post("@pub:hs", "国务院今日发布"), state, NOW).allowed
    assert decide(post("@pub:hs", "国务院 转载自 x"), state, NOW).allowed


def test_reposter_may_repost_but_not_publish_an_original(state):
    assert decide(post("@rep:hs", "国务院 转载自 x"), state, NOW).allowed
    refused = decide(post("@rep:hs", "国务院今日发布"), state, NOW)
    assert refused.reason is Reason.NEWS_TIER_MISSING and refused.params["tier"] == "publisher"


def test_identical_text_from_another_account_counts_as_a_repost(state):
    state.remember_text("State Council met  today", "@pub:hs", NOW)
    assert decide(post("@rep:hs", "state council met today"), state, NOW + 1000).allowed
    # Older than identical_days: an original again.
    assert not decide(post("@rep:hs", "state council met today"), state, NOW + 8 * 86_400_000).allowed
    # One's own earlier text is no repost.
    state.remember_text("State Council again", "@rep:hs", NOW)
    assert not decide(post("@rep:hs", "State Council again"), state, NOW + 1000).allowed


def test_out_of_scope_rooms_and_non_news_are_not_judged(state):
    assert decide(post("@plain:hs", "国务院今日发布", room="!private:hs"), state, NOW).allowed
    assert decide(post("@plain:hs", "lunch?"), state, NOW).allowed
    state.channels["!chan:hs"] = "@pub:hs"
    assert not decide(post("@plain:hs", "国务院今日发布", room="!chan:hs"), state, NOW).allowed


def test_automaton_agrees_with_a_naive_search_on_random_text():
    import random

    from bot.policy.news import KeywordAutomaton

    rng = random.Random(3)
    for _ in range(300):
        keywords = {"".join(rng.choice("abc") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 6))}
        text = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 30)))
        found = KeywordAutomaton(keywords).find(text)
        ends = [(i + len(k), k) for k in keywords for i in range(len(text)) if text.startswith(k, i)]
        if not ends:
            assert found is None, (keywords, text)
            continue
        first_end = min(end for end, _ in ends)
        first = next(k for end, k in ends if end == first_end)
        # The first keyword to end; of those starting no later than it, the longest.
        assert found in keywords and found in text, (keywords, text, found)
        assert len(found) >= len(first)
