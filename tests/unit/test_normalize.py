"""Normalisation: properties that make a disguised keyword meet its rule, and a text without it not.

The keywords are the shipped ones (bot/shipped/rules.yaml): what an operator actually relies on.
"""

import string

import opencc
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from bot.config import SHIPPED_DIR, load_news_rules
from bot.policy.news import NewsRules
from bot.policy.normalize import fold, fold_light, link_hosts, normalise_domain

SHIPPED = load_news_rules(SHIPPED_DIR / "rules.yaml")
SHIPPED_KEYWORDS = sorted(SHIPPED.keyword_rules)  # folded
import yaml  # noqa: E402

RAW_KEYWORDS = [k for rule in yaml.safe_load((SHIPPED_DIR / "rules.yaml").read_text("utf-8"))["news"]
                for k in rule.get("keywords", [])]

INVISIBLE = [
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u200f", "\u202a", "\u202c", "\u2066",
    "\u2069", "\u180e", "\u034f", "\ufe0f", "\ufe00", "\U000e0041", "\U000e007f", "\U000e0100", "\u3164", "\u115f",
    "\u2061", "\u2063", "\u061c",
]
# Latin letters and look-alikes a reader takes for them (Cyrillic, Greek, Armenian...). Each is a
# TS #39 confusable of the letter.
CONFUSABLE = {
    "a": "а", "c": "с", "e": "е", "o": "оο", "p": "рρ", "x": "х", "y": "у", "i": "іι", "s": "ѕ", "j": "ј",
    "h": "һ", "n": "ո", "u": "υ", "d": "ԁ", "g": "ɡ", "r": "г", "v": "ν",
}
# Letters drawn in another style ("fonts" that Unicode offers): small capitals, mathematical bold,
# negative circled.
SMALL_CAPS = dict(zip("abcdefghijklmnoprstuvwyz", "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ"))
STYLES = [
    lambda c: SMALL_CAPS.get(c.lower(), c),
    lambda c: chr(0x1D41A + ord(c.lower()) - ord("a")),  # 𝐚…𝐳
    lambda c: chr(0x1F150 + ord(c.lower()) - ord("a")),  # 🅐…🅩
]
S2T = opencc.OpenCC("s2t")
# Text around a keyword: any Unicode except the characters some keyword is made of (so the text
# cannot spell another keyword by itself) and surrogates.
KEYWORD_CHARS = {c for k in SHIPPED_KEYWORDS for c in k}
AROUND = st.text(st.characters(blacklist_categories=("Cs",)).filter(lambda c: not set(fold(c)) & KEYWORD_CHARS),
                 max_size=40)


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else ("\u3000" if c == " " else c) for c in text)


@st.composite
def disguised(draw, keyword: str) -> str:
    """The keyword, disguised by any mix of the tricks a reader does not notice (or reads
    through: spaces between Chinese characters)."""
    chars = list(keyword)
    if draw(st.booleans()):
        chars = list(S2T.convert(keyword))
    out = []
    for index, char in enumerate(chars):
        following = chars[index + 1] if index + 1 < len(chars) else ""
        if "\u4e00" <= char <= "\u9fff" and "\u4e00" <= following <= "\u9fff" and draw(st.booleans()):
            char += draw(st.sampled_from([" ", "\u3000", "  "]))  # 国 务 院: spaced out
        if char.isalpha() and char.isascii():
            if draw(st.booleans()):
                char = char.upper()
            if char.lower() in CONFUSABLE and draw(st.booleans()):
                char = draw(st.sampled_from(CONFUSABLE[char.lower()]))
            elif draw(st.booleans()):
                char = draw(st.sampled_from(STYLES))(char)
        if draw(st.booleans()):
            char = fullwidth(char)
        out.append(char)
        for _ in range(draw(st.integers(0, 2))):
            out.append(draw(st.sampled_from(INVISIBLE)))
    return "".join(out)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), before=AROUND, after=AROUND)
def test_any_disguise_of_a_shipped_keyword_meets_its_rule(data, before, after):
    raw = data.draw(st.sampled_from(RAW_KEYWORDS))
    text = before + data.draw(disguised(raw)) + after
    match = SHIPPED.classify(text)
    assert match is not None, text
    assert match.rule_id == SHIPPED.keyword_rules[fold(raw)]


@pytest.mark.parametrize("raw", RAW_KEYWORDS)
def test_each_trick_alone_still_matches(raw):
    rule = SHIPPED.keyword_rules[fold(raw)]
    for text in (raw.upper(), fullwidth(raw), S2T.convert(raw), "\u200b".join(raw), "\u00ad".join(raw),
                 " ".join(raw) if not raw.isascii() else raw,
                 *("".join(style(c) if c.isascii() and c.isalpha() else c for c in raw) for style in STYLES),
                 "".join(CONFUSABLE.get(c, c)[0] for c in raw)):
        assert (SHIPPED.classify(f"xx {text} yy") or pytest.fail(text)).rule_id == rule


def test_the_confusables_used_above_are_really_folded_to_the_letter():
    # Otherwise the property test above would test nothing for that letter.
    for letter, lookalikes in CONFUSABLE.items():
        for lookalike in lookalikes:
            assert fold(lookalike) == fold(letter), (letter, lookalike)


def test_invisible_characters_are_all_dropped():
    for char in INVISIBLE:
        assert fold(f"a{char}b") == "ab", hex(ord(char))


# A small world where matches are frequent: keywords over a few letters, texts over those letters
# plus their disguises, so "found" and "not found" both happen often.
SMALL_KEYWORDS = ["ab", "bca", "aac", "国务"]
SMALL_ALPHABET = "abcdAB国務务院 \u200bа"


@settings(max_examples=500)
@given(text=st.text(st.sampled_from(SMALL_ALPHABET), max_size=30))
def test_a_keyword_matches_exactly_when_its_folded_form_is_in_the_folded_text(text):
    """No spurious match: a keyword rule fires if and only if the folded keyword is a substring of
    the folded text (so a text whose folded form lacks every keyword is never news by keyword)."""
    rules = NewsRules.from_mapping({"news": [{"id": k, "keywords": [k]} for k in SMALL_KEYWORDS]})
    folded = fold(text)
    present = [k for k in SMALL_KEYWORDS if fold(k) in folded]
    match = rules.classify(text)
    assert (match is not None) == bool(present)
    if match is not None:
        assert match.rule_id in present


@settings(max_examples=300)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
@example("ǅ Σ İ ß ﬁ ㈱ ǈ")
def test_folding_is_idempotent(text):
    assert fold(fold(text)) == fold(text)
    assert fold_light(fold_light(text)) == fold_light(text)


@settings(max_examples=300)
@given(before=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
       after=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
       keyword=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8))
def test_a_folded_keyword_is_found_inside_any_text_around_it(before, keyword, after):
    """Folding works per character, so the rules' form of a keyword is inside the text's form of
    any sentence containing it (the property that lets rules be folded once, at load)."""
    folded = fold(keyword)
    assume(folded and folded == folded.strip())
    assert folded in fold(before + " " + keyword + " " + after)


@pytest.mark.parametrize(
    "text, folded",
    [
        ("ＳＴＡＴＥ　Ｃｏｕｎｃｉｌ", "state council"),
        ("ꜱᴛᴀᴛᴇ ᴄᴏᴜɴᴄɪʟ", "state council"),
        ("🅢🅣🅐🅣🅔 𝐂𝐨𝐮𝐧𝐜𝐢𝐥", "state council"),
        ("國務院新聞辦公室", "国务院新闻办公室"),
        ("外交部發言人", "外交部发言人"),
        ("Stаte", "state"),  # Cyrillic а
        ("sta\u0301te", "state"),  # a combining accent inserted to break the word
        ("a \t\n\u3000\u00a0 b", "a b"),
        ("Foreign Ministry", "foreign rninistry"),  # TS #39: 'm' and 'rn' look alike, both fold to 'rn'
        ("Foreign Rninistry", "foreign rninistry"),
        ("国 务　院 today", "国务院 today"),  # spaces between Chinese characters
    ],
)
def test_fold_examples(text, folded):
    assert fold(text) == folded


def test_light_folding_keeps_ascii_letters_and_digits_for_regular_expressions():
    assert fold_light("Ministry 10") == "ministry 10"
    assert fold("Ministry 10") == "rninistry lo"


@pytest.mark.parametrize(
    "text, hosts",
    [
        ("https://x@News.CN./a", ["news.cn"]),
        ("xinhuanet.com/a and www.news。cn", ["xinhuanet.com", "www.news.cn"]),
        ("https://%6E%65%77%73.cn", ["news.cn"]),
        ("http://xn--bcher-kva.example/", ["bucher.example"]),
        ("End of a sentence. Next one", []),
        ("a..b", []),
    ],
)
def test_link_hosts(text, hosts):
    assert link_hosts(text) == hosts


def test_domains_from_the_rules_take_the_same_form():
    assert normalise_domain(".News.CN.") == "news.cn"
    assert normalise_domain("xn--bcher-kva.example") == normalise_domain("Bücher.example") == "bucher.example"


@settings(max_examples=500)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=60) | st.text(string.printable, max_size=60))
@example(string.printable + " Mixed CASE 01 m|`")
def test_the_fast_paths_fold_like_the_plain_table(text):
    """fold takes shortcuts (ASCII table, lower() then replacements); each must give what mapping
    every character through the table gives."""
    from bot.policy.normalize import _CJK_GAP, _table

    def plain(table):
        return _CJK_GAP.sub("", " ".join(text.translate(table).split()))

    assert fold(text) == plain(_table(True))
    assert fold_light(text) == plain(_table(False))


# --- findings 10-12 of the review of issue 12 --------------------------------------------------------

@pytest.mark.parametrize("text", [
    "\u039dATIONAL PEOPLE'S CONGRESS",  # Greek capital Nu: case folding first would make it ν, read as v
    "STAT\u0395 COUNCIL",  # Greek capital Epsilon
    "FOREIGN \u041cINISTRY SPOKESPERSON",  # Cyrillic capital Em
    "FOREIGN MINISTRY SPO\u041aESPERSON",  # Cyrillic capital Ka
    "National People\u00b4s Congress",  # acute accent used as an apostrophe
])
def test_capital_look_alikes_fold_to_the_letter_they_look_like(text):
    assert (SHIPPED.classify(text) or pytest.fail(text)).rule_id == "state-organs"


def test_a_regex_rule_reads_capital_look_alikes_too():
    assert (SHIPPED.classify("PRESS CONFERENCE OF THE STAT\u0395") or pytest.fail()).rule_id == "policy-announcements"


@pytest.mark.parametrize("variant", ["囯", "圀", "囻", "囶"])
def test_variants_of_guo_that_opencc_does_not_map_read_as_guo(variant):
    assert fold(f"{variant}务院") == fold("国务院")


@pytest.mark.parametrize("japanese, simplified", [("総理", "总理"), ("経済", "经济"), ("発表", "发表"), ("対外", "对外")])
def test_japanese_shinjitai_read_as_simplified_chinese(japanese, simplified):
    assert fold(japanese) == fold(simplified)


# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), copied here rather than from the
# module under test, plus characters that are drawn with no ink without being default-ignorable.
DEFAULT_IGNORABLE = [(0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                     (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                     (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
                     (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF)]
NO_INK = [0x2800, 0x1D159]


def test_every_default_ignorable_and_inkless_character_is_dropped():
    codes = [c for low, high in DEFAULT_IGNORABLE for c in range(low, high + 1)] + NO_INK
    assert len(codes) > 4000
    missed = [hex(c) for c in codes if fold(f"国{chr(c)}务院") != "国务院"]
    assert not missed
