"""What a rule judges of an event: every piece of text a client would show, as one string.

One pipeline for the gate and room mode: ``event_text`` extracts, the news rules normalise
(bot.policy.normalize) and match. A new event type or field is one change here, not a branch in
each rule.

What counts as shown text, for any event type (so a client that invents a type is judged too):
- the text keys: ``body``, ``formatted_body`` (HTML: see below), ``filename``, ``caption``,
  ``name``, ``topic``, ``alias`` and ``alt_aliases``, ``question`` when it is a string, ``text``,
  ``reason`` (a redaction's), ``title`` (a widget's), ``url`` unless it is ``mxc://`` media (a
  widget's page, embedded in the room for everyone);
- the containers they sit in, walked: ``m.new_content`` (an edit is judged by what it becomes),
  polls (MSC3381 stable ``m.poll`` and unstable ``org.matrix.msc3381.poll.start``: question and
  every answer), extensible events (``m.text`` as a list of ``{body, mimetype}`` or a string,
  ``org.matrix.msc1767.text``, ``org.matrix.msc1767.message``, ``m.caption``; a block whose
  mimetype is ``text/html`` is read as HTML), MSC3765 ``m.topic``;
- a reaction's ``m.relates_to.key`` (any string, shown under the message it annotates);
- never: the rest of ``m.relates_to`` (event ids), ``m.mentions`` (user ids), media metadata (``info``,
  ``file``, ``mxc://`` urls), ``m.room.pinned_events`` (ids only).

HTML is read twice, and both readings are judged (a compliance gate that judges more than a client
shows can only refuse more; one that judges less has a way round it):
- as the HTML5 tree a browser builds (lexbor): every text node, plus the attributes a client shows
  (a link's target on hover, ``title``, ``alt``, a spoiler's reason ``data-mx-spoiler``, a
  formula's source ``data-mx-maths``);
- as Element shows it: its sanitiser (sanitize-html) drops the content of ``script``, ``style``,
  ``textarea`` and ``option`` (``国<style>x</style>务院`` shows 国务院), and shows the text of
  ``template`` and ``title``, which a browser keeps out of the body.
A body with more than ``MAX_TAGS`` tags in an event is not given to the parser (building the tree is
quadratic in the depth of open elements: 12,000 unclosed ``<div>`` take 300 ms) but read linearly:
tags removed, entities decoded, the shown attributes' values added. That reading keeps every
character a browser would show (and some it would not, such as script content).

A reply is judged by its own text. Its fallback -- the quoted message a client puts before it
(leading ``> `` lines of ``body`` and the blank line after them, ``<mx-reply>`` in
``formatted_body``), which clients strip before they show the reply -- is returned apart as
``quoted``: the news rules read it only to tell a repost (the news is in what the reply quotes)
from an original. A thread message's ``m.in_reply_to`` with ``is_falling_back`` is no reply.

The work is bounded whatever the event: at most ``MAX_CHARS`` characters of text are kept (a
longer event is judged on its first 64 KiB, which is Synapse's whole event size limit anyway),
at most ``MAX_DEPTH`` levels and ``MAX_NODES`` values are walked, and an HTML body is cut to
``MAX_CHARS`` before it is parsed.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any, Iterator

from selectolax.lexbor import LexborHTMLParser

MAX_CHARS = 64 * 1024
MAX_DEPTH = 10
# A 64 KiB event (Synapse's limit) holds at most ~32,000 objects and lists ("{}," is 3 bytes), so
# every event Synapse accepts is read whole; a larger one is cut here.
MAX_NODES = 40_000
# Tags the HTML parser gets per event; beyond it the linear reading. lexbor takes ~4 ms for 1,000
# nested elements and grows with the square of the depth; a real message has a few dozen tags.
MAX_TAGS = 1_000

# Keys whose string value a client shows.
_TEXT_KEYS = frozenset({
    "body", "filename", "caption", "name", "topic", "alias", "question", "text",
    "m.text", "org.matrix.msc1767.text",
    "reason",  # a redaction's reason: clients show it in place of the message
    "title",  # a widget's title (m.widget / im.vector.modular.widgets data.title)
})
_LIST_TEXT_KEYS = frozenset({"alt_aliases"})
_HTML_KEYS = frozenset({"formatted_body"})
# A media url (mxc://) names a file, not text; any other url is a page a client embeds or links
# (a widget's url: the page is shown in the room to every member).
_URL_KEY = "url"
# Keys that hold ids, metadata or links to media, never text a person reads.
_SKIPPED_KEYS = frozenset({
    "m.relates_to", "m.mentions", "info", "file", "thumbnail_url", "thumbnail_file",
    "thumbnail_info", "pinned", "mimetype", "msgtype", "format", "id", "m.id", "kind", "m.kind",
    "org.matrix.msc3381.poll.kind", "max_selections", "m.in_reply_to", "via", "event_id",
})
# HTML attributes a client shows: a link's target on hover, an image's alt text and title, a
# spoiler's reason (shown beside the hidden text), a formula's LaTeX source.
_HTML_ATTRIBUTES = ("href", "title", "alt", "data-mx-spoiler", "data-mx-maths")
_ATTRIBUTE_SELECTOR = ", ".join(f"[{name}]" for name in _HTML_ATTRIBUTES)
# Elements whose content Element's sanitiser drops (sanitize-html's nonTextTags).
_NOT_SHOWN = ("script", "style", "textarea", "option")


class ShownText(str):
    """The text an event shows as its own (a ``str``), carrying ``quoted``: what it quotes of
    another message (a reply's fallback), or None. ``event_text`` returns it so that the callers,
    which pass the text on as a string, carry the quote to ``NewsRules.classify`` unchanged."""

    __slots__ = ("quoted",)
    quoted: str | None

    def __new__(cls, text: str, quoted: str | None = None) -> "ShownText":
        shown = super().__new__(cls, text)
        shown.quoted = quoted
        return shown


@dataclass(frozen=True)
class EventParts:
    text: str | None  # what the event shows as its own
    quoted: str | None  # what a reply quotes of another message (its fallback), kept apart
    reply: bool  # a reply (m.in_reply_to, not a thread's fallback)

    @property
    def quotes_reply(self) -> bool:
        """A reply that quotes the message it answers."""
        return self.reply and self.quoted is not None


def event_parts(event_type: str | None, content: Any) -> EventParts:
    """The text an event shows as its own, and apart the text a reply quotes.

    ``event_type`` is accepted for the callers' sake; extraction does not depend on it, so an
    unknown type with a ``body`` is judged like a message.
    """
    if not isinstance(content, dict):
        return EventParts(None, None, False)
    relates = content.get("m.relates_to")
    reply = (isinstance(relates, dict) and isinstance(relates.get("m.in_reply_to"), dict)
             and relates.get("is_falling_back") is not True)
    pieces = _Pieces()
    quoted = _Pieces()
    if reply:
        pieces.quoted = quoted
        body = content.get("body")
        if isinstance(body, str) and body.startswith("> "):
            own, fallback = _split_fallback(body)
            quoted.add(fallback)
            content = {**content, "body": own}
    _walk(content, pieces)
    if isinstance(relates, dict) and isinstance(relates.get("key"), str):
        pieces.add(relates["key"])  # a reaction's key is shown under the message, to everyone
    return EventParts(pieces.joined(), quoted.joined(), reply)


def event_text(event_type: str | None, content: Any) -> tuple[str | None, bool]:
    """The text an event shows as its own (None if none; a ``ShownText`` carrying what a reply
    quotes), and whether it is a reply that quotes."""
    parts = event_parts(event_type, content)
    if parts.text is None:
        return None, parts.quotes_reply
    return ShownText(parts.text, parts.quoted), parts.quotes_reply


def _split_fallback(body: str) -> tuple[str, str]:
    """A reply's body -> (its own text, the quoted fallback), as clients strip it: the leading
    lines that start with "> ", and one blank line after them."""
    lines = body.split("\n")
    count = 0
    while count < len(lines) and lines[count].startswith("> "):
        count += 1
    quoted = "\n".join(line[2:] for line in lines[:count])
    if count < len(lines) and lines[count] == "":
        count += 1
    return "\n".join(lines[count:]), quoted


class _Pieces:
    """The texts found so far, within the budget, without repeats (``body`` and the text of
    ``formatted_body`` are usually the same; counting it twice would make two identical posts
    look different to the repost fingerprint depending on the client's formatting)."""

    __slots__ = ("items", "seen", "chars", "nodes", "tags", "quoted")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.seen: set[str] = set()
        self.chars = 0
        self.nodes = 0
        self.tags = 0  # tags given to the HTML parser so far
        self.quoted: _Pieces | None = None  # where a reply's <mx-reply> goes (top-level HTML only)

    @property
    def full(self) -> bool:
        return self.chars >= MAX_CHARS or self.nodes >= MAX_NODES

    def add(self, text: str) -> None:
        text = text.strip()
        if not text or self.full:
            return
        text = text[: MAX_CHARS - self.chars]
        if text in self.seen:
            return
        self.seen.add(text)
        self.items.append(text)
        self.chars += len(text) + 1  # and the line break that joins it to the next

    def joined(self) -> str | None:
        return "\n".join(self.items) if self.items else None


def _walk(content: dict[str, Any], pieces: _Pieces) -> None:
    # Depth first, in order, with a stack of iterators rather than recursion (a Python call per
    # list of a hostile [[[[…]]]] costs more than a push, and a wide list is never copied); a
    # dict's own strings before its children, so a deep or wide sibling cannot use up the budget
    # before the text beside it is read.
    stack: list[tuple[Iterator[Any], int]] = [(iter((content,)), 0)]
    while stack:
        siblings, depth = stack[-1]
        value = next(siblings, None)
        if value is None:
            stack.pop()
            continue
        if type(value) is not dict and type(value) is not list:
            continue
        if pieces.chars >= MAX_CHARS or pieces.nodes >= MAX_NODES:
            return
        pieces.nodes += 1
        deeper = depth + 1 if depth < MAX_DEPTH else 0
        if type(value) is list:
            if deeper and value:
                stack.append((iter(value), deeper))
            continue
        html_block = value.get("mimetype") == "text/html"  # an extensible-events HTML block
        nested = []
        for key, item in value.items():
            if type(item) is str:
                if key in _HTML_KEYS or (html_block and key == "body"):
                    # The top level's HTML only can hold a reply's fallback.
                    _html(item, pieces, pieces.quoted if depth == 0 else None)
                elif key in _TEXT_KEYS:
                    pieces.add(item)
                elif key == _URL_KEY and not item[:6].lower().startswith("mxc://"):
                    pieces.add(item)
            elif (type(item) is dict or type(item) is list) and deeper:
                if not isinstance(key, str) or key in _SKIPPED_KEYS:
                    continue
                if key in _LIST_TEXT_KEYS and type(item) is list:
                    for alias in item[:MAX_NODES]:
                        if isinstance(alias, str):
                            pieces.add(alias)
                else:
                    nested.append(item)
        if html_block and isinstance(value.get("body"), str):
            pieces.add(value["body"])  # and the markup as written, for a client that shows it raw
        if nested:
            stack.append((iter(nested), deeper))


def _html(markup: str, pieces: _Pieces, quoted: _Pieces | None) -> None:
    """The text of an HTML body in both readings (see the module's docstring), and the attributes
    a client shows; a reply's ``<mx-reply>`` goes to ``quoted`` when that is given.

    selectolax on lexbor: a complete HTML5 parser in C, so the tree is the one a browser builds
    (no unclosed tag or comment trick hides text from it), and it parses a 1 KB body in a few
    microseconds where BeautifulSoup or html5lib take a millisecond, in a gate with a 200 µs budget.
    """
    markup = markup[:MAX_CHARS]
    tags = markup.count("<")  # in C: the parser's cost follows the number of tags
    pieces.tags += tags
    if pieces.tags > MAX_TAGS:
        _html_linear(markup, pieces)
        return
    # Inline elements render without a gap (<b>国</b>务院 reads 国务院), so text nodes are joined
    # with nothing; the elements that break a line get a line break of their own first.
    markup = _BLOCK_END.sub("\n<", markup)
    lowered = markup.lower()
    if "<t" in lowered or "</t" in lowered:
        # Element shows <template> and <title> text; the parser puts it outside the body.
        markup = _SHOWN_ELSEWHERE.sub(_as_span, markup)
    # The whole document, not only its body: a <style> or <script> that opens the markup goes to
    # the head.
    root = LexborHTMLParser(markup).root
    if root is None:
        return
    if quoted is not None and "mx-reply" in lowered:
        for node in root.css("mx-reply"):
            quoted.add(node.text(deep=True, separator="", strip=False))
            node.decompose()
    pieces.add(root.text(deep=True, separator="", strip=False))
    if "href" in lowered or "title" in lowered or "alt" in lowered or "data-mx-" in lowered:
        for node in root.css(_ATTRIBUTE_SELECTOR):
            if pieces.full:
                return
            pieces.nodes += 1
            attributes = node.attributes
            for name in _HTML_ATTRIBUTES:
                value = attributes.get(name)
                if isinstance(value, str):
                    pieces.add(value)
    if "<script" in lowered or "<style" in lowered or "<textarea" in lowered or "<option" in lowered:  # _NOT_SHOWN
        for node in root.css(", ".join(_NOT_SHOWN)):
            node.decompose()
        pieces.add(root.text(deep=True, separator="", strip=False))  # the text as Element shows it


def _html_linear(markup: str, pieces: _Pieces) -> None:
    """HTML read in linear time, for a body with too many tags to parse: tags removed, entities
    decoded, and the shown attributes' values. Every character a browser shows is kept: a tag is
    only what starts like one (``<`` and a letter, ``/``, ``!`` or ``?``) and holds no other
    ``<`` or ``>``, so ``a < 国务院 > b`` stays text, and a quoted ``>`` in an attribute leaves the
    rest of the tag as text rather than hiding any. Every attribute's value is read, not only the
    shown ones (a search that starts at each ``=`` runs in C; naming the attributes would try a
    pattern at every position). A reply's <mx-reply> is not taken apart here: its quote is judged
    with the rest. Both can only refuse more, and only for a body no client sends."""
    # (split and join: the fastest way through the re module, ~0.15 µs a tag)
    text = "".join(_TAGS.split(_BLOCK_END.sub("\n<", markup)))
    pieces.add(html.unescape(text))
    # The values joined into one piece (quotes and all): one call, whatever the number of tags.
    pieces.add(html.unescape("\n".join(_ATTRIBUTE_VALUE.findall(markup))))


def _as_span(found: re.Match[str]) -> str:
    return "</span" if found.group(1) else "<span"


# (A literal first character lets the engine skip to each '<'; the lookahead leaves the tag name
# alone, so the replacement is a plain string with no template to expand per match.)
_BLOCK_END = re.compile(r"<(?=(?:br|hr|/p|/div|/li|/h[1-6]|/tr|/td|/th|/blockquote|/pre|/mx-reply)\b)", re.IGNORECASE)
_SHOWN_ELSEWHERE = re.compile(r"<(/?)(?:template|title)\b", re.IGNORECASE)
# Linear: a tag cannot hold '<' or '>', so each attempt stops at the next one; a run of tags is one
# match.
_TAGS = re.compile(r"(?:<[a-zA-Z/!?][^<>]*>)+")
_ATTRIBUTE_VALUE = re.compile(r"""=\s*("[^"<>]*"|'[^'<>]*'|[^\s"'<>=`]+)""")
