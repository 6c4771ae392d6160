"""The regex prefilter may only skip work: it never hides a match the pattern would find."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.policy.prefilter import may_match, required_literals

SHIPPED = ["(?:发布|印发).{0,10}(?:通知|意见|决定|条例)", "press conference of the (?:state|foreign)"]


@pytest.mark.parametrize("pattern, literals", [
    ("(?:发布|印发).{0,10}(?:通知|意见|决定|条例)", {"发布", "印发"}),
    ("press conference of the (?:state|foreign)", {"press conference of the "}),
    ("a+bc", {"bc"}),  # a longer literal after a repeated one is the more selective
    ("(?:x|y*)z", {"z"}),  # an alternative that may be empty gives nothing; the z does
    (r"\d+ days", {" days"}),
    ("STATE Council", {"state council"}),  # compared with the lower-cased text
])
def test_required_literals(pattern, literals):
    assert required_literals(re.compile(pattern, re.IGNORECASE)) == literals


@pytest.mark.parametrize("pattern", [r"\w+", "(?:a|)b?", ".*", "x?", "Äpfel", "(?=news)\\w+"])
def test_no_prefilter_where_none_is_safe(pattern):
    literals = required_literals(re.compile(pattern, re.IGNORECASE))
    assert literals is None or all(literals)  # (?=...) gives none; \w+ none; Ä is a cased non-ASCII letter
    if pattern in (r"\w+", ".*", "x?", "Äpfel"):
        assert literals is None


def test_a_text_without_the_literals_is_skipped_and_one_with_them_is_not():
    literals = required_literals(re.compile(SHIPPED[0], re.IGNORECASE))
    assert not may_match(literals, "a message of ordinary length. " * 28)
    assert may_match(literals, "国务院今日印发关于……的通知")


_alphabet = st.sampled_from(list("abcsk SK发布印通知 .ſKé"))
_pieces = st.lists(st.sampled_from(["a", "b", "c", "s", "k", "发布", "印发", "通知", ".", "x", "(?:a|bc)", "[ab]",
                                    "b+", "c*", "(?:s|k)", "\\s", "d?", "(?:发布|印发)", "(?:a|c*)", "(?:b|)"]), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(pieces=_pieces, text=st.text(alphabet=_alphabet, max_size=40))
def test_the_prefilter_never_skips_a_match(pieces, text):
    pattern = re.compile("".join(pieces), re.IGNORECASE)
    literals = required_literals(pattern)
    # The news rules read two texts: the raw one and its folded form (where NFKD has made ſ and K
    # plain s and k). The prefilter must never skip a reading in which the pattern matches, except
    # for those two characters that re's IGNORECASE maps to ASCII, which the folded reading covers.
    plain = text.replace("ſ", "s").replace("K", "k")
    if pattern.search(plain):
        assert may_match(literals, plain.lower())
