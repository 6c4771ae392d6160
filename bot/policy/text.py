"""What a rule judges of an event: every piece of text a client would show, as one string.

One pipeline for the gate and room mode: ``event_text`` extracts, the news rules normalise
(bot.policy.normalize) and match. A new event type or field is one change here, not a branch in
each rule.

What counts as shown text, for any event type (so a client that invents a type is judged too):
- the text keys: ``body``, ``formatted_body`` (HTML, through a real parser: the text, plus link
  targets, ``title`` and ``alt``, which a client shows on hover or as a link), ``filename``,
  ``caption``, ``name``, ``topic``, ``alias`` and ``alt_aliases``, ``question`` when it is a string,
  ``text``, ``reason`` (a redaction's), ``title`` (a widget's);
- the containers they sit in, walked: ``m.new_content`` (an edit is judged by what it becomes),
  polls (MSC3381 stable ``m.poll`` and unstable ``org.matrix.msc3381.poll.start``: question and
  every answer), extensible events (``m.text`` as a list of ``{body, mimetype}`` or a string,
  ``org.matrix.msc1767.text``, ``org.matrix.msc1767.message``, ``m.caption``), MSC3765 ``m.topic``;
- a reaction's ``m.relates_to.key`` (any string, shown under the message it annotates);
- never: the rest of ``m.relates_to`` (event ids), ``m.mentions`` (user ids), media metadata (``info``,
  ``file``, ``url``), ``m.room.pinned_events`` (ids only).

The work is bounded whatever the event: at most ``MAX_CHARS`` characters of text are kept (a
longer event is judged on its first 64 KiB, which is Synapse's whole event size limit anyway),
at most ``MAX_DEPTH`` levels and ``MAX_NODES`` values are walked, and an HTML body is cut to
``MAX_CHARS`` before it is parsed.
"""

from __future__ import annotations

import re
from typing import Any

from selectolax.lexbor import LexborHTMLParser

MAX_CHARS = 64 * 1024
MAX_DEPTH = 10
# A 64 KiB event (Synapse's limit) holds at most ~32,000 objects and lists ("{}," is 3 bytes), so
# every event Synapse accepts is read whole; a larger one is cut here.
MAX_NODES = 40_000

# Keys whose string value a client shows.
_TEXT_KEYS = frozenset({
    "body", "filename", "caption", "name", "topic", "alias", "question", "text",
    "m.text", "org.matrix.msc1767.text",
    "reason",  # a redaction's reason: clients show it in place of the message
    "title",  # a widget's title (m.widget / im.vector.modular.widgets data.title)
})
_LIST_TEXT_KEYS = frozenset({"alt_aliases"})
_HTML_KEYS = frozenset({"formatted_body"})
# Keys that hold ids, metadata or links to media, never text a person reads.
_SKIPPED_KEYS = frozenset({
    "m.relates_to", "m.mentions", "info", "file", "url", "thumbnail_url", "thumbnail_file",
    "thumbnail_info", "pinned", "mimetype", "msgtype", "format", "id", "m.id", "kind", "m.kind",
    "org.matrix.msc3381.poll.kind", "max_selections", "m.in_reply_to", "via", "event_id",
})
# HTML attributes a client shows (a link's target on hover, an image's alt text and title).
_HTML_ATTRIBUTES = ("href", "title", "alt")


def event_text(event_type: str | None, content: Any) -> tuple[str | None, bool]:
    """The text an event shows to people (None if none), and whether it is a reply that quotes.

    ``event_type`` is accepted for the callers' sake; extraction does not depend on it, so an
    unknown type with a ``body`` is judged like a message.
    """
    if not isinstance(content, dict):
        return None, False
    pieces = _Pieces()
    _walk(content, pieces, 0)
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and isinstance(relates.get("key"), str):
        pieces.add(relates["key"])  # a reaction's key is shown under the message, to everyone
    text = "\n".join(pieces.items) if pieces.items else None
    return text, _quotes_reply(content)


def _quotes_reply(content: dict[str, Any]) -> bool:
    """A reply that quotes: its body carries the quoted message ("> " fallback) and it is a real
    reply. A thread message carries ``m.in_reply_to`` with ``is_falling_back: true`` for clients
    without threads: that is no quoting reply."""
    body = content.get("body")
    relates = content.get("m.relates_to")
    if not isinstance(body, str) or not body.startswith("> ") or not isinstance(relates, dict):
        return False
    return isinstance(relates.get("m.in_reply_to"), dict) and relates.get("is_falling_back") is not True


class _Pieces:
    """The texts found so far, within the budget, without repeats (``body`` and the text of
    ``formatted_body`` are usually the same; counting it twice would make two identical posts
    look different to the repost fingerprint depending on the client's formatting)."""

    __slots__ = ("items", "seen", "chars", "nodes")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.seen: set[str] = set()
        self.chars = 0
        self.nodes = 0

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


def _walk(value: Any, pieces: _Pieces, depth: int) -> None:
    # A dict's own strings before its children: a deep or wide sibling cannot use up the budget
    # before the text beside it is read.
    if depth > MAX_DEPTH or pieces.full:
        return
    pieces.nodes += 1
    nested = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key in _SKIPPED_KEYS:
                continue
            if isinstance(item, str):
                if key in _HTML_KEYS:
                    _html(item, pieces)
                elif key in _TEXT_KEYS:
                    pieces.add(item)
            elif isinstance(item, list) and key in _LIST_TEXT_KEYS:
                for alias in item[:MAX_NODES]:
                    if isinstance(alias, str):
                        pieces.add(alias)
            elif isinstance(item, (dict, list)):
                nested.append(item)
    else:
        nested = [item for item in value if isinstance(item, (dict, list))]
    for item in nested:
        if pieces.full:
            return
        _walk(item, pieces, depth + 1)


def _html(markup: str, pieces: _Pieces) -> None:
    """The text of an HTML body as a browser shows it, plus the attributes a client shows.

    selectolax on lexbor: a complete HTML5 parser in C, so the tree is the one a browser builds
    (no unclosed tag or comment trick hides text from it), and it parses a 1 KB body in a few
    microseconds where BeautifulSoup or html5lib take a millisecond, in a gate with a 200 µs budget.
    """
    # Inline elements render without a gap (<b>国</b>务院 reads 国务院), so text nodes are joined
    # with nothing; the elements that break a line get a line break of their own first.
    markup = _BLOCK_END.sub("\n<", markup[:MAX_CHARS])
    root = LexborHTMLParser(markup).body
    if root is None:
        return
    pieces.add(root.text(deep=True, separator="", strip=False))
    lowered = markup.lower()
    if "href" not in lowered and "title" not in lowered and "alt" not in lowered:
        return  # no attribute to read: skip the selector
    for node in root.css("[href], [title], [alt]"):
        if pieces.full:
            return
        pieces.nodes += 1
        attributes = node.attributes
        for name in _HTML_ATTRIBUTES:
            value = attributes.get(name)
            if isinstance(value, str):
                pieces.add(value)


# (A literal first character lets the engine skip to each '<'; the lookahead leaves the tag name
# alone, so the replacement is a plain string with no template to expand per match.)
_BLOCK_END = re.compile(r"<(?=(?:br|hr|/p|/div|/li|/h[1-6]|/tr|/td|/th|/blockquote|/pre|/mx-reply)\b)", re.IGNORECASE)
