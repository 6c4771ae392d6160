"""Text normalisation: one folding for the rules when they load and for every text they judge.

A rule must not be dodged by a spelling a reader does not notice. ``fold`` maps a text to the form
the keyword rules compare, ``fold_light`` to the form the regular expressions see, ``link_hosts``
to the link domains it names. Each character is mapped on its own, by a table built once:

1. compatibility decomposition (Unicode NFKD: fullwidth ``Ｓｔａｔｅ`` is ``State``, ``㈱`` is ``(株)``),
   then combining marks are dropped (``státe`` is ``state``: an accent or a stray U+0301 inserted
   to break a word changes nothing; the price is that ``cafe`` and ``café`` are one word);
2. invisible characters are dropped: every format character (category Cf: zero-width space and
   joiners, bidi marks, soft hyphen, word joiner, tag characters), every Default_Ignorable_Code_Point
   (variation selectors, Hangul fillers, combining grapheme joiner...), and the characters drawn with
   no ink that Unicode does not call ignorable (braille blank, musical null notehead);
3. case folding (``str.casefold``);
4. traditional and variant forms to simplified Chinese with OpenCC's character tables (``國務院`` is
   ``国务院``; also the Taiwan, Hong Kong and Japanese shinjitai variants, ``総`` is ``总``) and a
   short curated table of informal variants no OpenCC table has (``囯``, ``圀``, ``囻`` are ``国``).
   OpenCC also has phrase tables, but a phrase can span the edge of a keyword, so the same keyword
   could convert one way alone and another way inside a sentence; per character, a keyword inside
   any text converts exactly as it does alone;
5. confusable characters to their prototype (Unicode TS #39 ``confusables.txt``, as shipped by the
   ``confusable_homoglyphs`` package): Cyrillic ``а`` is Latin ``a``, Greek ``ο`` is ``o``; and the
   styled letters neither NFKD nor TS #39 fold (small capitals ``ꜱᴛᴀᴛᴇ``, negative circled ``🅢``).
   ``fold`` also maps the ASCII look-alikes (``0``→``o``, ``1``/``|``→``l``, ``m``→``rn``);
   ``fold_light`` does not, so a regular expression's literal letters and digits stay as written;
6. every whitespace run becomes one space, leading and trailing space is dropped, and a space
   between two Chinese characters is dropped (``国 务 院`` reads ``国务院``; Chinese has no spaces).

Steps 1-5 repeat until the character is stable, so ``fold(fold(x)) == fold(x)``. Because each step
works per character, a keyword folded alone appears in the folded text of any sentence that
contains it (the property the tests check).

Case folding comes before the confusables, which reads most letters right but not the capitals
whose lowercase looks like another letter (Greek ``Ν`` lowercases to ``ν``, read as ``v``):
``fold_variants`` gives a second reading of such a text, those characters replaced by their TS #39
prototype first, and the rules are matched against both readings.

Regular-expression rules are searched in the raw text AND in ``fold_light`` of it: the raw text
keeps what a rule author may rely on (exact characters, case if the pattern asks for it), the
folded one is what defeats invisible characters, width, script and confusables. A pattern is
written in lowercase simplified Chinese to profit from the folded form.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache
from typing import Iterable, Iterator
from urllib.parse import unquote

# Characters that render as nothing, so they can be put inside a word to break a match. First the
# Unicode Default_Ignorable_Code_Point property in full (DerivedCoreProperties.txt, Unicode 15.1;
# Python's unicodedata does not expose it), then the characters that the lists of "invisible
# characters" name although Unicode does not make them default-ignorable. Each is listed once.
_IGNORABLE_RANGES = (
    # Default_Ignorable_Code_Point
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors and vowel separator
    (0x200B, 0x200F),  # zero-width space, non-joiner, joiner; left-to-right and right-to-left marks
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates, deprecated format characters
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (byte order mark)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),  # unassigned, reserved as default-ignorable
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol begin/end beam, tie, slur, phrase
    (0xE0000, 0xE0FFF),  # tags and variation selectors supplement
    # Invisible, not default-ignorable
    (0x2800, 0x2800),  # braille pattern blank: drawn as a blank cell, is not a space
    (0x1D159, 0x1D159),  # musical symbol null notehead: drawn with no ink (category So)
    (0x13430, 0x1343F),  # Egyptian hieroglyph format controls (category Cf, dropped anyway)
)
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Cc", "Cs"})
# Ideographs and compatibility ideographs OpenCC's character table may convert.
_CJK_RANGES = ((0x2E80, 0x2FDF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x323AF))
# Label separators that IDNA treats as a dot (ideographic, fullwidth and halfwidth full stops).
_DOTS = ("\u3002", "\uff0e", "\uff61", "\ufe52")
_MAX_ROUNDS = 4


def warm_up() -> None:
    """Build the tables now (about a second, once per process) rather than on the first text."""
    _ascii_tables()
    _light()
    _prototype_first()


def fold(text: str) -> str:
    """The form keyword rules compare: NFKD without marks and invisibles, casefolded, simplified
    Chinese, TS #39 skeleton (ASCII look-alikes included), whitespace collapsed."""
    return _fold(text, True)


def fold_light(text: str) -> str:
    """As ``fold`` but leaving ASCII characters' own look-alikes (0/o, 1/l, m/rn) alone."""
    return _fold(text, False)


def fold_variants(text: str) -> Iterator[str]:
    """``fold(text)``, then a second reading when the text holds a character that folds otherwise
    than its TS #39 prototype: Greek capital ``Ν`` reads as ``N``, but case folding (which comes
    first) makes it ``ν``, whose prototype is ``v``; ``´`` used as an apostrophe decomposes to a
    space. The second reading replaces those characters by their prototype before folding. A rule
    is matched against both (judging a text in two readings can only refuse more); the second is
    only worked out if it is asked for, i.e. when the first matched nothing."""
    first = _fold(text, True)
    yield first
    replaced = _prototypes_first(text)
    if replaced is not None:
        second = _fold(replaced, True)
        if second != first:
            yield second


def fold_light_variants(text: str) -> Iterator[str]:
    """``fold_light`` in the readings of ``fold_variants``."""
    first = _fold(text, False)
    yield first
    replaced = _prototypes_first(text)
    if replaced is not None:
        second = _fold(replaced, False)
        if second != first:
            yield second


@lru_cache(maxsize=16)  # the keyword and the regex readings of one text ask for it
def _prototypes_first(text: str) -> str | None:
    """The text with the characters of ``_prototype_first`` replaced (None: it has none)."""
    if text.isascii():
        return None
    pattern, prototypes = _prototype_first()
    hits = set(pattern.findall(text))  # a bitmap class, searched in C
    if _has_astral(text):
        hits.update(c for c in text if c > "\uffff" and c in prototypes)
    if not hits:
        return None
    for char in hits:
        text = text.replace(char, prototypes[char])
    return text


@lru_cache(maxsize=1)
def _prototype_first() -> tuple[re.Pattern[str], dict[str, str]]:
    """The characters whose fold differs from their prototype's (a few hundred of TS #39's six
    thousand), as a character class and a mapping to the prototype."""
    unfolded = _fold.__wrapped__  # (single characters: keep them out of the text cache)
    prototypes = {source: proto for source, proto in _confusables(True).items()
                  if not source.isascii() and unfolded(source, True) != unfolded(proto, True)}
    # The basic plane's only: a class of them compiles to a bitmap; astral ones are looked up.
    body = "".join(re.escape(c) for c in sorted(prototypes) if c <= "\uffff")
    return re.compile(f"[{body}]"), prototypes


# One event is judged by the classifier and by the repost fingerprint: fold it once.
@lru_cache(maxsize=16)  # small: an entry can be 64 KiB of text
def _fold(text: str, skeleton: bool) -> str:
    if skeleton:
        folded = _fold(text, False)
        for source, target in _ascii_tables()[1]:
            if source in folded:
                folded = folded.replace(source, target)
        return folded
    if text.isascii():
        # Nothing to decompose, no invisible, Chinese or non-ASCII confusable: CPython translates
        # ASCII to single ASCII characters in C.
        folded = text.translate(_ascii_tables()[0])
    else:
        # str.translate costs ~140 ns a character outside ASCII, but most characters of a text
        # fold to themselves: lower() (in C) does the bulk, one character class (searched in C)
        # finds the few distinct characters left, and each is replaced (the table's values are
        # folded, so the order of replacements does not matter and lower() never undoes them).
        folded = text.lower()
        basic, table, by_code = _light()
        hits = set(basic.findall(folded))
        if _has_astral(folded):
            hits.update(c for c in folded if c > "\uffff" and c in table)
        if len(hits) > _MAX_REPLACEMENTS:
            folded = folded.translate(by_code)
        else:
            for char in hits:
                folded = folded.replace(char, table[char])
    # Every whitespace character is a space now: collapse runs (rare, so test before working).
    if "  " in folded:
        folded = _SPACES.sub(" ", folded)
    if not text.isascii():
        # Chinese is written without spaces: 国 务 院 reads 国务院 (a classic way round a filter).
        folded = _CJK_GAP.sub("", folded)
    return folded.strip(" ")


_MAX_REPLACEMENTS = 96  # beyond it translate() is cheaper (measured)
_SPACES = re.compile("  +")
# A space between two ideographs (the literal space first lets the engine skip to spaces).
_CJK_GAP = re.compile(" (?<=[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff] )(?=[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def _has_astral(text: str) -> bool:
    """Whether the text holds a character beyond the basic plane, without reading it: CPython
    stores such a text with 4 bytes a character, which its size shows."""
    return sys.getsizeof(text) >= _UCS4_HEADER + 4 * (len(text) + 1)


_UCS4_HEADER = sys.getsizeof("\U00010000") - 8
if sys.implementation.name != "cpython" or sys.getsizeof("\u0100" * 9) >= _UCS4_HEADER + 40:
    def _has_astral(text: str) -> bool:  # noqa: F811 (another interpreter: read it)
        return any(c > "\uffff" for c in text)


@lru_cache(maxsize=1)
def _light() -> tuple[re.Pattern[str], dict[str, str], dict[int, str | None]]:
    """The light table as a character class of the basic plane's characters it changes (after
    lower(), which leaves none of those it changes) -- compiled to a bitmap, so one test per
    character --, a str -> str mapping, and the code -> str mapping translate() takes."""
    by_code = _table(False)
    table = {chr(code): value or "" for code, value in by_code.items() if chr(code).lower() == chr(code)}
    ranges: list[list[int]] = []
    for code in sorted(ord(c) for c in table if ord(c) <= 0xFFFF):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    body = "".join(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges)
    return re.compile(f"[{body}]"), table, by_code


@lru_cache(maxsize=1)
def _ascii_tables() -> tuple[dict[int, str | None], list[tuple[str, str]]]:
    """The light table for ASCII (all single characters or deletions, so CPython's fast path
    applies), and the ASCII look-alikes ``fold`` adds (0->o, 1->l, m->rn...) as replacements."""
    light, full = _table(False), _table(True)
    light_ascii = {code: light[code] for code in range(128) if code in light}
    skeleton = []
    for code in range(128):
        base = light_ascii.get(code, chr(code))
        if base is not None and code in full and full[code] != base:
            skeleton.append((chr(code), full[code] or ""))
    return light_ascii, skeleton


def link_hosts(text: str) -> list[str]:
    """The host names a text shows, normalised: with or without a scheme or userinfo, percent-
    decoded, without a trailing dot, fullwidth dots read as dots, ``xn--`` labels decoded, folded.

    A host is any run of ASCII letters, digits and hyphens with at least one dot (so
    ``请看news.cn的文章`` names ``news.cn``); hosts in other scripts are matched by ``has_domain``.
    """
    return list(_link_hosts(text))


@lru_cache(maxsize=16)  # the domain rules and the repost sources read the same text's hosts
def _link_hosts(text: str) -> tuple[str, ...]:
    prepared = _url_text(text)
    if prepared.count(".") > _MANY_DOTS:
        # Thousands of hosts (a.a a.a …): one pass of a pattern in C, each distinct host once.
        return tuple(_host(h) for h in dict.fromkeys(_HOST_FIND.findall(prepared)))
    hosts = []
    # A host needs a dot with a label after it: search from each such dot (found in C) rather
    # than trying a pattern at every position of the text, which costs ~20 µs per KB; the host's
    # extent either side is found in C too (rstrip, a match), and the next search starts past it,
    # so a hostile a.a.a…a of 30,000 labels is read once.
    end = 0
    while True:
        found = _DOT_LABEL.search(prepared, end)
        if found is None:
            break
        dot = found.start()
        start = end + len(prepared[end:dot].rstrip(_HOST_CHARS_STR))
        stop = _HOST_RUN.match(prepared, dot + 1).end()  # type: ignore[union-attr] (it matches "")
        host = prepared[start:stop].rstrip(".")  # a trailing dot ends the host (xinhuanet.com.)
        end = stop
        if "." not in host or ".." in host or host[0] == ".":
            continue  # an empty label: no host
        hosts.append(_host(host))
    return tuple(hosts)


def _host(host: str) -> str:
    if host.count(".") >= _MAX_LABELS:
        # A rule names a domain of a few labels and matches the end of a host: the last labels
        # are all it needs.
        host = host.split(".", host.count(".") - _MAX_LABELS + 1)[-1]
    if "xn--" in host:
        host = ".".join(_decode_label(label) for label in host.split("."))
    return host


_MANY_DOTS = 256
_HOST_FIND = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")


_HOST_CHARS_STR = "abcdefghijklmnopqrstuvwxyz0123456789-"
_HOST_RUN = re.compile(r"[a-z0-9.-]*")
_HOST_CHARS = frozenset(_HOST_CHARS_STR)
_MAX_LABELS = 16
# A dot that a label follows: the end of a sentence ("word. Next") is not one, and is skipped in C.
_DOT_LABEL = re.compile(r"\.(?=[a-z0-9-])")


def normalise_domain(domain: str) -> str:
    """A domain from the rules in the form ``link_hosts`` returns (folded, no dots at the ends)."""
    prepared = _url_text(domain).strip(". ")
    return ".".join(_decode_label(label) for label in prepared.split("."))


def url_text(text: str) -> str:
    """The text as the link rules read it (exposed so a caller that checks non-ASCII domains can
    search it for them)."""
    return _url_text(text)


@lru_cache(maxsize=16)
def _url_text(text: str) -> str:
    if "%" in text:
        text = unquote(text, errors="replace")
    for dot in _DOTS:
        if dot in text:
            text = text.replace(dot, ".")
    return fold_light(text)


def _decode_label(label: str) -> str:
    # (Python's punycode decoder is quadratic: only a label DNS allows, 63 characters, is decoded.)
    if label.startswith("xn--") and len(label) <= 63:
        try:
            return fold_light(label[4:].encode("ascii").decode("punycode"))
        except (UnicodeError, ValueError):
            return label
    return label


def has_domain(url_text: str, domain: str) -> bool:
    """Whether ``domain`` (a non-ASCII rule domain, normalised) appears in ``url_text`` as a host or
    the end of one: not followed by more of an ASCII host name. (In running Chinese text nothing
    marks where a Chinese host name ends: ``请看新华网.中国的报道`` names 新华网.中国, as a reader
    sees it, so a Chinese character after it is not taken as more of the host.)"""
    start = url_text.find(domain)
    while start != -1:
        end = start + len(domain)
        after = url_text[end:end + 2]
        if not after or not (after[0] in _HOST_CHARS or (after[0] == "." and after[1:] in _HOST_CHARS)):
            return True
        start = url_text.find(domain, start + 1)
    return False


def domain_suffixes(host: str) -> Iterable[str]:
    """``a.b.news.cn`` -> ``a.b.news.cn``, ``b.news.cn``, ``news.cn``, ``cn``: a rule for a domain
    covers its subdomains, and ``notnews.cn`` is not a subdomain of ``news.cn``."""
    parts = host.split(".")
    return (".".join(parts[i:]) for i in range(len(parts)))


# --- the table -------------------------------------------------------------------------------

def _table(skeleton: bool) -> dict[int, str | None]:
    return _tables()[1 if skeleton else 0]


Tables = tuple[dict[int, str | None], dict[int, str | None]]
_preloaded: list[Tables] = []


def preload_tables(tables: Tables) -> None:
    """Use tables that this same code built earlier from the same data (bot.foldcache keeps them
    on disk, keyed by this file and the data it reads): a start-up without the second of building."""
    _preloaded[:] = [tables]
    for cached in (_tables, _ascii_tables, _light, _prototype_first):
        cached.cache_clear()


def built_tables() -> Tables:
    """The tables as ``fold`` uses them (built now if need be), for bot.foldcache to keep."""
    return _tables()


@lru_cache(maxsize=1)
def _tables() -> Tables:
    """Code point -> its folded form (None: dropped), for every code point folding changes; the
    light table first, then the one with ASCII look-alikes. Built once per process (about a
    second): every assigned code point is folded on its own."""
    if _preloaded:
        return _preloaded[0]
    light, full = _confusables(False), _confusables(True)
    t2s = _t2s()
    letters = _letterlike()
    ignorable = set()
    for low, high in _IGNORABLE_RANGES:
        ignorable.update(range(low, high + 1))

    def step(char: str, confusables: dict[str, str]) -> str:
        out = []
        for part in unicodedata.normalize("NFKD", char):
            if part.isspace():
                out.append(" ")
            elif ord(part) in ignorable or unicodedata.category(part) in _DROPPED_CATEGORIES:
                continue
            else:
                part = letters.get(part, part).casefold()
                part = "".join(t2s.get(c, c) for c in part)
                part = "".join(confusables.get(c, c) for c in part)
                out.append(part.casefold())
        return "".join(out)

    def folded(char: str, confusables: dict[str, str]) -> str:
        for _ in range(_MAX_ROUNDS):
            nxt = "".join(step(c, confusables) for c in char)
            if nxt == char:
                break
            char = nxt
        return char

    tables: tuple[dict[int, str | None], dict[int, str | None]] = ({}, {})
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        if code not in ignorable and (category in ("Cn", "Co") or (
                category in ("Ll", "Lo") and char not in full and char not in t2s and char not in letters
                and not unicodedata.decomposition(char) and char.casefold() == char)):
            continue  # the common case, nothing to do: skipping it saves most of the build time
        for table, confusables in zip(tables, (light, full)):
            value = folded(char, confusables)
            if value != char:
                table[code] = value or None
    return tables


def _confusables(skeleton: bool) -> dict[str, str]:
    """TS #39 source character -> prototype. ``confusable_homoglyphs`` stores each line of
    ``confusables.txt`` both ways; the direction comes back from its shape: a source has exactly
    one entry (its prototype), and where a prototype also has a single source, the source is the
    one written first (the file's line order, kept in the JSON)."""
    from confusable_homoglyphs.confusables import confusables_data

    def clean(s: str) -> str:
        return s.replace("\u200e", "").replace("\u200f", "")

    order = {key: index for index, key in enumerate(confusables_data)}
    result = {}
    for key, entries in confusables_data.items():
        if len(entries) != 1:
            continue
        target = entries[0]["c"]
        back = confusables_data.get(target) or []
        if len(back) == 1 and back[0]["c"] == key and order.get(target, len(order)) < order[key]:
            continue  # key is the prototype of a one-source pair
        source, proto = clean(key), clean(target)
        if len(source) != 1:
            continue
        if not skeleton and source.isascii():
            continue
        # A confusable of a letter that differs only in case folds by case already (and mapping
        # e.g. 'I' to 'l' would break case-insensitivity of keywords with 'i').
        if source.casefold() == proto.casefold():
            continue
        if source.isascii() and source.isalpha() and proto.isascii() and proto.isalpha() and len(proto) == 1:
            continue  # 'I' -> 'l': casefold makes it 'i'; see above
        result[source] = proto
    return result


def _letterlike() -> dict[str, str]:
    """Letters drawn in another style that neither NFKD nor TS #39 folds, but that a reader reads
    as the letter: small capitals (ꜱᴛᴀᴛᴇ), squared and negative circled or squared letters
    (🅢🅣🅐🅣🅔, 🆂🆃🅰🆃🅴). Found by their Unicode names, in the blocks that hold them. (Regional
    indicators are left alone: in pairs they are flags.)"""
    pattern = re.compile(r"(?:LATIN LETTER SMALL CAPITAL|(?:NEGATIVE )?(?:CIRCLED|SQUARED) LATIN CAPITAL LETTER) ([A-Z])")
    found = {}
    for low, high in ((0x0250, 0x02AF), (0x1D00, 0x1D7F), (0xA720, 0xA7FF), (0x1F100, 0x1F1FF)):
        for code in range(low, high + 1):
            match = pattern.fullmatch(unicodedata.name(chr(code), ""))
            if match:
                found[chr(code)] = match.group(1).lower()
    return found


def _t2s() -> dict[str, str]:
    """Traditional and variant forms -> simplified, per character, from OpenCC's tables: t2s first,
    then the Taiwan and Hong Kong variant tables (tw2s, hk2s), then Japanese shinjitai (経, 発,
    総: jp2t gives the traditional form, t2s its simplified one), then ``_VARIANTS``; the first
    table that changes a character decides."""
    import opencc

    chars = [chr(c) for low, high in _CJK_RANGES for c in range(low, high + 1)
             if unicodedata.category(chr(c)) == "Lo"]

    def per_char(config: str, items: list[str]) -> list[str]:
        # One call: a newline between characters keeps OpenCC's phrase tables out of it.
        converted = opencc.OpenCC(config).convert("\n".join(items)).split("\n")
        return converted if len(converted) == len(items) else items  # a changed line count: be safe

    result: dict[str, str] = {}
    for converted in (per_char("t2s", chars), per_char("tw2s", chars), per_char("hk2s", chars),
                      per_char("t2s", per_char("jp2t", chars))):
        for a, b in zip(chars, converted):
            if a != b:
                result.setdefault(a, b)
    for a, b in _VARIANTS.items():
        result.setdefault(a, b)
    return result


# Informal and historical variants that no OpenCC table maps, read as the standard character by a
# Chinese reader. From Unihan (Unihan_Variants.txt, kZVariant and kSemanticVariant of the standard
# form), chosen by hand: only variants in current informal use or seen in filter evasion. Add a line
# here when a variant is seen in the wild.
_VARIANTS = {
    "\u56ef": "国",  # 囯: the informal handwritten 国 (国 with 王)
    "\u5700": "国",  # 圀: Empress Wu's character for 國
    "\u56fb": "国",  # 囻: variant of 國 (民 inside)
    "\u56f6": "国",  # 囶: variant of 國
    "\u4e8a": "事",  # 亊: variant of 事
}
