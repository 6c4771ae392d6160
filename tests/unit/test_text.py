"""The text pipeline's extraction: every route a client offers reaches the news rules.

Each route is judged with the shipped rules (bot/shipped/rules.yaml) and must name the rule the plain
message names; a route that hid its text would make the assertion fail, not pass.
"""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import SHIPPED_DIR, load_news_rules
from bot.policy.text import MAX_CHARS, event_text

NEWS = "国务院今日召开会议"  # state-organs
HARMLESS = "hello, lunch at noon?"


@pytest.fixture(scope="module")
def rules():
    return load_news_rules(SHIPPED_DIR / "rules.yaml")


def judged(rules, event_type, content):
    text, quotes = event_text(event_type, content)
    assert text is not None, "no text extracted"
    return rules.classify(text, quotes_a_reply=quotes)


def rule_of(rules, event_type, content):
    match = judged(rules, event_type, content)
    return None if match is None else match.rule_id


def test_harmless_text_is_not_news(rules):
    assert rule_of(rules, "m.room.message", {"msgtype": "m.text", "body": HARMLESS}) is None


ROUTES = {
    "body": ("m.room.message", {"msgtype": "m.text", "body": NEWS}),
    "formatted_body-behind-a-harmless-body": (
        "m.room.message",
        {"msgtype": "m.text", "body": HARMLESS, "format": "org.matrix.custom.html", "formatted_body": f"<p>{NEWS}</p>"},
    ),
    "formatted_body-split-by-tags": (
        "m.room.message",
        {"msgtype": "m.text", "body": HARMLESS, "format": "org.matrix.custom.html",
         "formatted_body": "<b>国</b><i>务</i><span data-mx-color='#000'>院</span>今日"},
    ),
    "formatted_body-title-attribute": (
        "m.room.message",
        {"msgtype": "m.text", "body": HARMLESS, "format": "org.matrix.custom.html",
         "formatted_body": f"<span title='{NEWS}'>hover me</span>"},
    ),
    "formatted_body-img-alt": (
        "m.room.message",
        {"msgtype": "m.text", "body": HARMLESS, "format": "org.matrix.custom.html",
         "formatted_body": f"<img src='mxc://hs/x' alt='{NEWS}'>"},
    ),
    "edit-new-content": (
        "m.room.message",
        {"msgtype": "m.text", "body": "* hello",
         "m.new_content": {"msgtype": "m.text", "body": NEWS},
         "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}},
    ),
    "edit-new-content-html": (
        "m.room.message",
        {"msgtype": "m.text", "body": "* hello",
         "m.new_content": {"msgtype": "m.text", "body": "hello", "format": "org.matrix.custom.html",
                           "formatted_body": f"<em>{NEWS}</em>"},
         "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}},
    ),
    "image-caption": (
        "m.room.message",
        {"msgtype": "m.image", "body": NEWS, "filename": "photo.jpg", "url": "mxc://hs/x", "info": {"w": 1}},
    ),
    "image-caption-key": (
        "m.room.message",
        {"msgtype": "m.image", "body": "photo.jpg", "caption": NEWS, "url": "mxc://hs/x"},
    ),
    "file-name": ("m.room.message", {"msgtype": "m.file", "body": "a.pdf", "filename": f"{NEWS}.pdf", "url": "mxc://hs/x"}),
    "video-caption": ("m.room.message", {"msgtype": "m.video", "body": NEWS, "filename": "v.mp4", "url": "mxc://hs/v"}),
    "audio-caption": ("m.room.message", {"msgtype": "m.audio", "body": NEWS, "filename": "a.ogg", "url": "mxc://hs/a"}),
    "sticker": ("m.sticker", {"body": NEWS, "url": "mxc://hs/s", "info": {}}),
    "notice": ("m.room.message", {"msgtype": "m.notice", "body": NEWS}),
    "emote": ("m.room.message", {"msgtype": "m.emote", "body": NEWS}),
    "poll-stable-question": (
        "m.poll.start",
        {"m.poll": {"kind": "m.disclosed", "max_selections": 1,
                    "question": {"m.text": [{"body": NEWS}]},
                    "answers": [{"m.id": "a", "m.text": [{"body": "yes"}]}]},
         "m.text": [{"body": "a poll"}]},
    ),
    "poll-stable-answer": (
        "m.poll.start",
        {"m.poll": {"question": {"m.text": [{"body": "which?"}]},
                    "answers": [{"m.id": "a", "m.text": [{"body": "no"}]}, {"m.id": "b", "m.text": [{"body": NEWS}]}]}},
    ),
    "poll-unstable-question": (
        "org.matrix.msc3381.poll.start",
        {"org.matrix.msc3381.poll.start": {
            "kind": "org.matrix.msc3381.poll.disclosed", "max_selections": 1,
            "question": {"org.matrix.msc1767.text": NEWS, "body": NEWS},
            "answers": [{"id": "a", "org.matrix.msc1767.text": "yes"}]},
         "org.matrix.msc1767.text": "a poll"},
    ),
    "poll-unstable-answer": (
        "org.matrix.msc3381.poll.start",
        {"org.matrix.msc3381.poll.start": {
            "question": {"org.matrix.msc1767.text": "which?"},
            "answers": [{"id": "a", "org.matrix.msc1767.text": "no"}, {"id": "b", "org.matrix.msc1767.text": NEWS}]}},
    ),
    "poll-stable-type-with-unstable-shape": (
        "m.poll.start",
        {"org.matrix.msc3381.poll.start": {"question": {"body": NEWS}, "answers": []}},
    ),
    "extensible-m.text-list": ("m.message", {"m.text": [{"mimetype": "text/html", "body": f"<b>{NEWS}</b>"}, {"body": NEWS}]}),
    "extensible-m.text-string": ("m.message", {"m.text": NEWS}),
    "extensible-msc1767-text": ("m.message", {"org.matrix.msc1767.text": NEWS}),
    "extensible-msc1767-message": (
        "m.message", {"org.matrix.msc1767.message": [{"mimetype": "text/plain", "body": NEWS}]},
    ),
    "room-name": ("m.room.name", {"name": NEWS}),
    "room-topic": ("m.room.topic", {"topic": NEWS}),
    "room-topic-msc3765": ("m.room.topic", {"topic": "t", "m.topic": [{"mimetype": "text/plain", "body": NEWS}]}),
    "canonical-alias": ("m.room.canonical_alias", {"alias": "#国务院新闻:hs"}),
    "canonical-alt-alias": ("m.room.canonical_alias", {"alias": "#a:hs", "alt_aliases": ["#b:hs", "#国务院:hs"]}),
    "reaction-key": ("m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": NEWS}}),
    "redaction-reason": ("m.room.redaction", {"redacts": "$x", "reason": NEWS}),
    "widget-title": ("im.vector.modular.widgets", {"type": "m.custom", "url": "https://w", "name": "w",
                                                   "data": {"title": NEWS}}),
    "unknown-type-with-body": ("com.example.invented", {"body": NEWS}),
    "unknown-type-nested": ("com.example.invented", {"com.example.payload": {"text": NEWS}}),
}


@pytest.mark.parametrize("event_type, content", list(ROUTES.values()), ids=list(ROUTES))
def test_every_route_is_judged_like_the_plain_message(rules, event_type, content):
    assert rule_of(rules, event_type, content) == "state-organs"


def test_a_link_in_formatted_body_is_a_link_for_the_domain_rules(rules):
    content = {"msgtype": "m.text", "body": "look", "format": "org.matrix.custom.html",
               "formatted_body": "<a href='https://www.news.cn/politics/1.htm'>look</a>"}
    assert rule_of(rules, "m.room.message", content) == "news-agencies"


def test_html_blocks_read_as_separate_lines_and_comments_are_not_text(rules):
    text, _ = event_text("m.room.message", {
        "body": "x", "format": "org.matrix.custom.html",
        "formatted_body": "<p>State</p><p>Council</p><!-- 国务院 --><br>end"})
    assert "State\nCouncil" in text and "国务院" not in text
    # "State" and "Council" on two lines still read "State Council" to a person, and to the rules.
    assert rules.classify(text).rule_id == "state-organs"


def test_pinned_events_show_no_text():
    assert event_text("m.room.pinned_events", {"pinned": ["$国务院:hs"]}) == (None, False)


def test_ids_and_metadata_are_not_text():
    text, _ = event_text("m.room.message", {
        "msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": ["@国务院:hs"]},
        "m.relates_to": {"m.in_reply_to": {"event_id": "$国务院"}}, "info": {"name": "国务院"}})
    assert text == "hi"


@pytest.mark.parametrize("content", [None, "body", 3, [], {"body": 5}, {"body": ""}, {}])
def test_content_without_text_gives_none(content):
    assert event_text("m.room.message", content) == (None, False)


REPLY = {"m.in_reply_to": {"event_id": "$q"}}


@pytest.mark.parametrize(
    "content, quotes",
    [
        ({"body": "> <@a:hs> 国务院\n\nagreed", "m.relates_to": REPLY}, True),
        ({"body": "agreed", "m.relates_to": REPLY}, False),  # a reply that does not quote
        ({"body": "> just a quote", "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}, False),
        ({"body": "> <@a:hs> 国务院\n\nin a thread",
          "m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True, **REPLY}}, False),
        ({"body": "> <@a:hs> 国务院\n\nreply in a thread",
          "m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": False, **REPLY}}, True),
    ],
    ids=["quoting-reply", "plain-reply", "not-a-reply", "thread-fallback", "reply-in-thread"],
)
def test_a_thread_message_is_no_quoting_reply(content, quotes):
    assert event_text("m.room.message", content)[1] is quotes


def test_a_huge_event_is_cut_and_judged_quickly(rules):
    content = {"body": "x" * (1 << 20) + NEWS, "formatted_body": "<p>" + "<b>y</b>" * (1 << 17) + "</p>",
               "m.new_content": {"body": "z" * (1 << 20)}}
    started = time.perf_counter()
    text, _ = event_text("m.room.message", content)
    rules.classify(text)
    assert time.perf_counter() - started < 0.5
    assert len(text) <= MAX_CHARS


def test_deep_nesting_is_bounded_without_recursion_error():
    content: dict = {"body": "top"}
    node = content
    for _ in range(50_000):
        node["x"] = {"body": NEWS}
        node = node["x"]
    started = time.perf_counter()
    text, _ = event_text("com.example.deep", content)
    assert time.perf_counter() - started < 0.1
    assert text.startswith("top") and text.count(NEWS) == 1  # repeats are kept once


def test_deep_html_is_parsed_without_error():
    markup = "<div>" * 20_000 + NEWS + "</div>" * 20_000
    started = time.perf_counter()
    text, _ = event_text("m.room.message", {"body": "x", "formatted_body": markup})
    assert time.perf_counter() - started < 1.0
    assert text is not None


def test_a_wide_sibling_does_not_hide_the_text_beside_it(rules):
    content = {"com.example.padding": [[]] * 30_000, "body": HARMLESS, "x": {"body": NEWS}}
    assert rule_of(rules, "com.example.invented", content) == "state-organs"


def test_many_small_values_are_bounded():
    content = {"answers": [{"m.text": [{"body": f"answer {i}"}]} for i in range(100_000)]}
    started = time.perf_counter()
    text, _ = event_text("m.poll.start", content)
    assert time.perf_counter() - started < 0.2
    assert 1000 < len(text) <= MAX_CHARS


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(["body", "formatted_body", "m.new_content", "m.text", "question", "answers", "name",
                         "topic", "alt_aliases", "m.relates_to", "key", "org.matrix.msc1767.text", "x"]) | st.text(max_size=5),
        children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event_type=st.one_of(st.none(), st.text(max_size=10)), content=JSON)
def test_any_content_is_judged_without_an_exception(rules, event_type, content):
    """Whatever a client (or a remote server) puts in an event, extraction and matching answer:
    the gate must never turn a strange event into a 500."""
    text, quotes = event_text(event_type, content)
    assert text is None or (isinstance(text, str) and text)
    assert isinstance(quotes, bool)
    if text is not None:
        rules.classify(text, quotes_a_reply=quotes)


# --- HTML as Element shows it, and as a browser parses it (both are judged) ---------------------

def html_message(markup):
    return {"msgtype": "m.text", "body": HARMLESS, "format": "org.matrix.custom.html", "formatted_body": markup}


@pytest.mark.parametrize("markup", [
    "国<style>x</style>务院今日",  # Element's sanitiser drops the content of style, script, textarea, option
    "国<script>x</script>务院今日",
    "国<textarea>x</textarea>务院今日",
    "国<select><option>x</option></select>务院今日",
    f"<template>{NEWS}</template>",  # Element shows template and title text; a browser keeps it out of the body
    f"<title>{NEWS}</title>",
    f"<p>hi</p><title>{NEWS}</title>",
    f"<style>{NEWS}</style>",  # and what the parser reads, although Element hides it
])
def test_html_is_judged_as_element_shows_it_and_as_the_parser_reads_it(rules, markup):
    assert rule_of(rules, "m.room.message", html_message(markup)) == "state-organs"


@pytest.mark.parametrize("attribute", ["data-mx-spoiler", "data-mx-maths"])
def test_a_spoiler_reason_and_a_formula_are_shown_text(rules, attribute):
    markup = f'<span {attribute}="{NEWS}">…</span>'
    assert rule_of(rules, "m.room.message", html_message(markup)) == "state-organs"


@pytest.mark.parametrize("event_type, content", [
    ("m.room.topic", {"topic": HARMLESS, "m.topic": {"m.text": [
        {"mimetype": "text/html", "body": "国<b></b>务院今日"}, {"mimetype": "text/plain", "body": HARMLESS}]}}),
    ("m.room.message", {"msgtype": "m.text", "body": HARMLESS, "org.matrix.msc1767.text": [
        {"mimetype": "text/html", "body": "国<b></b>务院今日"}, {"body": HARMLESS}]}),
])
def test_an_html_block_of_an_extensible_event_is_read_as_html(rules, event_type, content):
    assert rule_of(rules, event_type, content) == "state-organs"


@pytest.mark.parametrize("event_type", ["im.vector.modular.widgets", "m.widget"])
def test_a_widget_url_is_shown_text_and_a_media_url_is_not(rules, event_type):
    widget = {"type": "m.custom", "url": "https://www.news.cn/politics/", "name": "Today", "data": {}, "id": "w1"}
    assert rule_of(rules, event_type, widget) == "news-agencies"
    image = {"msgtype": "m.image", "body": "photo.jpg", "url": "mxc://news.cn/abc"}
    assert event_text("m.room.message", image)[0] == "photo.jpg"


# --- replies: the own text is judged, the fallback is the quote ------------------------------------

PARENT = "国务院今天发布了新的通知"
FALLBACK_HTML = (f'<mx-reply><blockquote><a href="https://matrix.to/#/!r:hs/$news">In reply to</a> '
                 f'<a href="https://matrix.to/#/@pub:hs">@pub:hs</a><br>{PARENT}</blockquote></mx-reply>')


@pytest.mark.parametrize("content", [
    {"msgtype": "m.text", "body": f"> <@pub:hs> {PARENT}\n\nThanks!", "format": "org.matrix.custom.html",
     "formatted_body": FALLBACK_HTML + "Thanks!", "m.relates_to": REPLY},
    {"msgtype": "m.text", "body": "Thanks!", "format": "org.matrix.custom.html",
     "formatted_body": FALLBACK_HTML + "Thanks!", "m.relates_to": REPLY},
    {"msgtype": "m.text", "body": f"> <@pub:hs> {PARENT}\n> second line\n\nThanks!", "m.relates_to": REPLY},
], ids=["body-and-html", "html-only", "body-only"])
def test_a_reply_is_judged_by_its_own_text_and_its_fallback_is_the_quote(rules, content):
    text, quotes = event_text("m.room.message", content)
    assert text == "Thanks!" and quotes
    assert PARENT in text.quoted
    assert rules.classify(text, quotes_a_reply=quotes) is None


def test_a_fallback_is_no_fallback_without_a_real_reply(rules):
    # No m.in_reply_to, or a thread's fallback: the quoted lines are the message's own text.
    for relates in (None, {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True, **REPLY}):
        content = {"body": f"> {PARENT}\n\nThanks!", "formatted_body": FALLBACK_HTML + "Thanks!"}
        if relates:
            content["m.relates_to"] = relates
        text, quotes = event_text("m.room.message", content)
        assert not quotes and PARENT in text
        assert rules.classify(text).rule_id == "state-organs"


def test_a_scoop_in_a_reply_is_an_original_and_news_in_the_quote_makes_a_repost(rules):
    scoop = "国务院今天决定: my own scoop"
    original, quotes = event_text("m.room.message", {"body": "> <@a:hs> hi\n\n" + scoop, "m.relates_to": REPLY})
    assert quotes and not rules.classify(original, quotes_a_reply=quotes).repost
    repost, quotes = event_text("m.room.message", {"body": f"> <@a:hs> {PARENT}\n\n{scoop}", "m.relates_to": REPLY})
    assert quotes and rules.classify(repost, quotes_a_reply=quotes).repost


# --- bounded work: every event Synapse accepts is judged in milliseconds ----------------------------

def best_of_three_ms(rules, content):
    # This thread's CPU time: what the event costs the gate's loop, without the time other
    # processes of a busy test machine hold the CPU.
    times = []
    for _ in range(3):
        started = time.thread_time()
        text, quotes = event_text("m.room.message", content)
        if text is not None:
            rules.classify(text, quotes_a_reply=quotes)
        times.append((time.thread_time() - started) * 1000)
    return min(times), text


HOSTILE = {
    "unclosed-divs": html_message("<div>" * 12_000 + NEWS),
    "select-options": html_message("<select>" + "<option>a" * 6_000 + "</select>" + NEWS),
    "title-attributes": html_message("".join(f'<i title="{i}">' for i in range(3_400)) + f'<i title="{NEWS}">'),
    "many-bodies": {"body": HARMLESS, "x": [html_message("<div>" * 900 + f"{i}") for i in range(11)] + [
        html_message("<div>" * 900 + "国<b></b>务院")]},
    "dotted-host": {"body": "a." * 30_000},
    "many-hosts": {"body": "".join(f"a{i}.a " for i in range(7_000)) + "www.news.cn"},
    "nested-lists": {"body": HARMLESS, "x": [[[[[[[[[[{"body": "x"}]]]]]]]]]] * 2_000},
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_event_under_64_kib_is_judged_in_milliseconds_and_still_read(rules, name):
    import orjson

    content = HOSTILE[name]
    assert len(orjson.dumps(content)) < 64 * 1024
    elapsed, text = best_of_three_ms(rules, content)
    # The gate answers every user from one event loop: one event must not hold it for long.
    # (Before the linear HTML reading, the linear host search and the walk without recursion these
    # took 12-300 ms.)
    assert elapsed < 10, f"{elapsed:.1f} ms"
    expected = {"dotted-host": None, "nested-lists": None, "many-hosts": "news-agencies"}.get(name, "state-organs")
    match = rules.classify(text)
    assert (match and match.rule_id) == expected  # the bounded reading missed nothing


@pytest.mark.parametrize("markup", [
    "a < 国务院 > b",  # not a tag: a browser shows it
    '<i title="a>国务院">x</i>',  # a quoted '>' ends the tag for the linear reading: the rest is text
    "国<b></b>务院",
    "国&#x52a1;院",
    '<a href="https://www.news.cn/">x</a>',
])
def test_the_linear_html_reading_keeps_what_a_browser_shows(rules, markup):
    content = html_message("<br>" * 1_001 + markup)
    text, _ = event_text("m.room.message", content)
    assert rules.classify(text) is not None, text
