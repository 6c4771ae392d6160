"""The replica protocol: how a ``PolicyState`` travels from the bot to a module inside Synapse.

Pure (stdlib ``json``-able values, no I/O): the Synapse module imports it, so it may import only the
policy core and the standard library (orjson is not in Synapse's dependencies).

A snapshot is ``{"version", "epoch", "seq", "state"}``: every replicated field of PolicyState,
encoded by its type (``codec_for``), so a field added to PolicyState travels without a change
here; ``LOCAL_ONLY`` names the fields that deliberately stay in the bot. A change record is
``{"seq", "field", "key", "value"}`` or ``{"seq", "field", "key", "deleted": true}``:

- ``key`` null: the whole field now has ``value`` (a scalar, a frozenset, the news rules);
- a dict field: ``key`` (the encoded key) now maps to ``value``, or is gone;
- a set field: ``key`` (the encoded member) is in the set (``value`` true), or is not.

A value is always the whole value at that key after the change, never a delta, so applying the
records in ``seq`` order to the snapshot taken at ``seq`` N gives the bot's state at each later seq.

This docstring is the protocol's reference. On the wire (bot.replica.publisher serves it on the
gate's port; every route needs ``Authorization: Bearer <gate token>``, else 401 M_UNKNOWN_TOKEN):

- ``GET /replica/v1/snapshot``: 200, the snapshot above, streamed (no Content-Length). Send
  ``X-Replica-Id: <server>/<worker>`` here and on changes: the bot counts replicas by address and id.
- ``GET /replica/v1/changes?since=N[&epoch=E][&timeout=ms]``: 200 ``{"epoch", "seq", "changes"}``,
  the records after N (at most 10,000: ask again from the last one; ``seq`` is the last record's,
  the bot's newest unless the page was cut; a replica's position is its last applied record), at
  once if there are any, else after ``timeout`` ms (default 25,000, at most 30,000) with none, or as
  soon as the bot stops (its answer then is the same: take it as a success and ask again at once;
  the next process answers 410). 410 M_REPLICA_GONE: N is older than the bot keeps, ahead of its
  numbering, or ``epoch`` is not the bot's (it restarted): take a new snapshot; so too when an
  answer's epoch is not yours. 400 M_INVALID_PARAM: ``since`` or ``timeout`` is not a non-negative
  integer.
- ``POST /replica/v1/reports`` ``{"items": [{"id", "kind", ...}]}``: what a module's decisions
  leave for the bot, each applied by the gate's handler for the same thing, once per ``id`` (the
  last 100,000 are remembered, so a retried batch is safe). Kinds: ``prompt {user_id}`` (refused for
  the agreement, or logged in: the bot DMs it), ``post {user_id, event_id?, ts}`` (an allowed post
  under a rate cap), ``text {user_id, fingerprint, ts}`` (an allowed text in news scope, by its
  bot.policy.news.fingerprint; an older module sends ``body`` instead),
  ``private_news {room_id, rule}`` (news posted out of scope), ``scope {room_id, event}`` (an
  allowed join-rules or history-visibility event), ``publish {user_id, room_id}`` (a room
  published), ``new_room {user_id}`` (an allowed room creation). 200 ``{"applied", "duplicates"}``;
  400 M_INVALID_PARAM names the first bad item and applies nothing of the batch; 503 with
  ``applied`` and ``duplicates``: some items failed on the bot's side, send the batch again;
  413 M_TOO_LARGE: the body is over 1 MiB (every POST route), send it in smaller batches.
- ``POST /replica/v1/ratecap`` ``{user_id, event_id, ts}``: the gate's own answer for a post of an
  account under a rate cap (200 ``{}``, counted once per event_id, or 403 with its refusal), asked
  synchronously because the count is shared by every Synapse process.
- ``POST /replica/v1/consent`` ``{user_id}``: 200 ``{"accepted": true, "version"}`` if the account
  accepted the current agreement at registration, ``{"accepted": false}`` if it did not, and
  ``{"accepted": false, "unknown": true, "retry_after_ms"}`` if the bot could not check now (its
  admin API did not answer, its service is not up yet): refuse as not agreed for now; asking again
  after ``retry_after_ms`` finds the answer (a hot standby and the Synapse module do;
  ``consent_answer`` reads it for both).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from bot.policy.news import NewsRules
from bot.policy.state import PolicyState

PROTOCOL_VERSION = 1
# Fields a replica never needs. Empty on purpose: every field of PolicyState is decision state
# today (tests/unit/test_replica_protocol.py fails when a new field can be neither encoded nor
# is listed here).
LOCAL_ONLY: frozenset[str] = frozenset()


class ProtocolError(ValueError):
    """A snapshot or change this replica cannot apply; the message says what is wrong."""


Encode = Callable[[Any], Any]
Decode = Callable[[Any], Any]


@dataclass(frozen=True)
class Codec:
    encode: Encode
    decode: Decode
    identity: bool = False  # encode and decode return the value itself (str, int, bool)
    plain_out: bool = False  # encode returns the value itself (a JSON writer writes it as it is)


def _same(value: Any) -> Any:
    return value


_IDENTITY = Codec(_same, _same, identity=True, plain_out=True)


def _news_rules_codec() -> Codec:
    # Compiled automata and regexes do not travel: the rules file's mapping does, and the replica
    # compiles it with the same NewsRules.from_mapping, so both classify a text the same way.
    def encode(rules: NewsRules) -> Any:
        return rules.source

    def decode(data: Any) -> NewsRules:
        return NewsRules() if data is None else NewsRules.from_mapping(data)

    return Codec(encode, decode)


_SPECIAL: dict[Any, Callable[[], Codec]] = {NewsRules: _news_rules_codec}
_CACHE: dict[Any, Codec] = {}


def codec_for(tp: Any) -> Codec:
    """The JSON codec of a type annotation: scalars as they are, enums by value, sets as lists,
    tuples as lists, dicts as objects (keys encoded to strings), dataclasses as objects of their
    fields. TypeError for a type it does not know (so a new field's test fails, not the wire)."""
    try:
        return _CACHE[tp]
    except (KeyError, TypeError):
        pass
    codec = _build(tp)
    try:
        _CACHE[tp] = codec
    except TypeError:
        pass
    return codec


def _build(tp: Any) -> Codec:
    if tp in _SPECIAL:
        return _SPECIAL[tp]()
    if tp in (str, int, bool, float, type(None), Any):
        return _IDENTITY
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"no replica codec for the union {tp!r}")
        item = codec_for(inner[0])
        if item.identity:
            return _IDENTITY
        return Codec(lambda v: None if v is None else item.encode(v), lambda v: None if v is None else item.decode(v))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return Codec(lambda v: v.value, tp)
    if origin in (set, frozenset):
        item = codec_for(args[0])
        if item.identity:
            return Codec(list, origin)
        return Codec(lambda v: [item.encode(x) for x in v], lambda v: origin(item.decode(x) for x in v))
    if origin is list:
        item = codec_for(args[0])
        if item.identity:
            return Codec(list, list)
        return Codec(lambda v: [item.encode(x) for x in v], lambda v: [item.decode(x) for x in v])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = codec_for(args[0])
            return Codec(lambda v: [item.encode(x) for x in v], lambda v: tuple(item.decode(x) for x in v))
        items = [codec_for(a) for a in args]
        if all(c.identity for c in items):
            # JSON writers (json, orjson) write a tuple as an array: no copy needed on the way out
            # (recent_texts holds 200,000 of these). Read back as a tuple.
            return Codec(_same, tuple, plain_out=True)
        return Codec(lambda v: [c.encode(x) for c, x in zip(items, v)],
                     lambda v: tuple(c.decode(x) for c, x in zip(items, v)))
    if origin is dict:
        key, value = key_codec(args[0]), codec_for(args[1])
        if key.identity and value.identity:
            return Codec(dict, dict)
        if key.identity and value.plain_out:
            return Codec(dict, lambda v: {k: value.decode(x) for k, x in v.items()})
        return Codec(lambda v: {key.encode(k): value.encode(x) for k, x in v.items()},
                     lambda v: {key.decode(k): value.decode(x) for k, x in v.items()})
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = [(f.name, codec_for(hints[f.name])) for f in dataclasses.fields(tp)]
        return Codec(lambda v: {name: c.encode(getattr(v, name)) for name, c in fields},
                     lambda v: tp(**{name: c.decode(v[name]) for name, c in fields if name in v}))
    raise TypeError(f"no replica codec for {tp!r}")


def key_codec(tp: Any) -> Codec:
    """JSON object keys are strings: a str key travels as it is, an int key as its digits."""
    if tp is str:
        return _IDENTITY
    if tp is int:
        return Codec(str, int)
    raise TypeError(f"no replica codec for a dict key of type {tp!r}")


@dataclass(frozen=True)
class FieldSpec:
    """How one PolicyState field travels: its codec, and for dicts and sets the codecs of a key
    and of one entry, so a change carries one entry, not the whole field."""

    name: str
    kind: str  # 'value', 'dict' or 'set'
    whole: Codec
    key: Codec | None = None
    item: Codec | None = None


def _spec(name: str, tp: Any) -> FieldSpec:
    origin = typing.get_origin(tp)
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        return FieldSpec(name, "dict", codec_for(tp), key_codec(key_type), codec_for(value_type))
    if origin is set:
        return FieldSpec(name, "set", codec_for(tp), key_codec(typing.get_args(tp)[0]))
    return FieldSpec(name, "value", codec_for(tp))


def field_specs() -> dict[str, FieldSpec]:
    """Every replicated field of PolicyState, in declaration order."""
    hints = typing.get_type_hints(PolicyState)
    return {f.name: _spec(f.name, hints[f.name]) for f in dataclasses.fields(PolicyState) if f.name not in LOCAL_ONLY}


SPECS = field_specs()


CONSENT_PATH = "/replica/v1/consent"


def consent_answer(status: int, body: Any) -> tuple[bool | None, str | None]:
    """``/replica/v1/consent``'s answer as (accepted, version): True (with the version the bot
    recorded, if it said), False for a no, None when the bot could not check or answered
    something else (an error status, not the document above)."""
    if status != 200 or not isinstance(body, Mapping) or not isinstance(body.get("accepted"), bool):
        return None, None
    if not body["accepted"]:
        return (None if body.get("unknown") is True else False), None
    version = body.get("version")
    return True, version if isinstance(version, str) else None


def encode_state(state: PolicyState) -> dict[str, Any]:
    """Every replicated field, encoded (JSON-able); plain containers, safe to serialise later."""
    return {name: spec.whole.encode(getattr(state, name)) for name, spec in SPECS.items()}


def snapshot(state: PolicyState, epoch: str, seq: int) -> dict[str, Any]:
    return {"version": PROTOCOL_VERSION, "epoch": epoch, "seq": seq, "state": encode_state(state)}


def apply_snapshot(document: Mapping[str, Any]) -> PolicyState:
    """A fresh PolicyState from a snapshot (the whole document, or its ``state``).

    Fields the document lacks (an older bot) keep their defaults; fields this replica does not know
    (a newer bot) are ignored, and ``unknown_fields`` names them for the caller's log."""
    if "state" in document:
        if document.get("version") != PROTOCOL_VERSION:
            raise ProtocolError(f"snapshot version {document.get('version')!r}, this replica reads {PROTOCOL_VERSION}")
        document = document["state"]
    if not isinstance(document, Mapping):
        raise ProtocolError("a snapshot's state must be an object")
    values = {}
    for name, spec in SPECS.items():
        if name in document:
            try:
                values[name] = spec.whole.decode(document[name])
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                raise ProtocolError(f"snapshot field {name!r} cannot be read: {exc}") from None
    missing = [n for n in ("bot_user_id", "server_name", "agreement_version") if n not in values]
    if missing:
        raise ProtocolError(f"snapshot lacks {', '.join(missing)}")
    return PolicyState(**values)


def unknown_fields(document: Mapping[str, Any]) -> list[str]:
    state = document.get("state", document)
    return sorted(set(state) - set(SPECS))


DELETED = object()


def change_record(seq: int, field_name: str, key: Any, value: Any) -> dict[str, Any]:
    """The wire form of a change (``value`` already encoded, or ``DELETED``)."""
    if value is DELETED:
        return {"seq": seq, "field": field_name, "key": key, "deleted": True}
    return {"seq": seq, "field": field_name, "key": key, "value": value}


def apply_change(state: PolicyState, change: Mapping[str, Any]) -> None:
    """Apply one change record to a replica's state. ProtocolError if it cannot be applied; a
    field this replica does not know is skipped (a newer bot), like in ``apply_snapshot``."""
    spec = SPECS.get(change.get("field"))  # type: ignore[arg-type]
    if spec is None:
        return
    key = change.get("key")
    deleted = change.get("deleted") is True
    try:
        if key is None:
            if deleted:
                raise ProtocolError(f"a whole field cannot be deleted ({spec.name})")
            setattr(state, spec.name, spec.whole.decode(change["value"]))
            return
        if spec.kind == "value":
            raise ProtocolError(f"field {spec.name!r} has no keys")
        assert spec.key is not None
        container = getattr(state, spec.name)
        member = spec.key.decode(key)
        if spec.kind == "set":
            if deleted or not change.get("value"):
                container.discard(member)
            else:
                container.add(member)
        elif deleted:
            container.pop(member, None)
        else:
            assert spec.item is not None
            container[member] = spec.item.decode(change["value"])
    except ProtocolError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ProtocolError(f"change {change.get('seq')!r} to {spec.name!r} cannot be applied: {exc}") from None
