"""``POST /identity/v1/verifications``: the operator's identity service says a person was verified.

The request is signed, not bearer-authorised: ``X-Signature: sha256=<hex>`` is HMAC-SHA256 under
``identity.assertion_secret_file`` over ``<X-Timestamp>.<raw body>`` (the timestamp in seconds
since the epoch), so a body cannot be replayed under a new timestamp nor altered. A timestamp more
than five minutes off either way is refused, and each assertion is usable once (by its
``assertion_id``, or its signature when it has none) while its timestamp is inside that window.

Body: ``{"user_id", "subject", "method", "level", "verified_at", "attributes"?, "assertion_id"?}``
(``verified_at`` in ms since the epoch, or ISO 8601). Every error answers with a Matrix errcode
and a clear ``error``, and records nothing; no answer or log line carries the subject.

The same request sent again (same assertion, same signature) gets the answer it got the first
time, 200 or the policy's 403, and records nothing more: an identity service that got no answer (a
timeout, a 503 that could not say whether the bot recorded it) simply sends it again. The same
``assertion_id`` under another signature is a replay: 401 "assertion already used".

On a hot standby (issue 11, bot.standby) the request is relayed unchanged to the active bot and its
answer returned as it is: only the active's records reach its memory (``PolicyState.verified``) and
the replicas, and the one database's table of used assertions keeps each usable once whichever
process it is sent to. The standby checks the signature itself first (it holds the same secret),
so an unsigned request learns nothing about the active. A process on PostgreSQL relays from its
first answer, before it knows whether it is the active (bot.gatefirst), so a starting process
never records one behind the active's back. With no active bot to reach, or a database that cannot
commit now, the answer is 503 ``M_UNKNOWN``: send the assertion again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import sqlite3
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping, Protocol

import aiohttp
import orjson
from aiohttp import web

from bot.config import Settings
from bot.identity.keys import canonical_subject, read_secret
from bot.identity.service import Identity
from bot.store.db import store_unavailable
from bot.store.identity import VERIFIED

log = logging.getLogger(__name__)

PATH = "/identity/v1/verifications"
WINDOW_MS = 5 * 60 * 1000
MAX_BODY = 64 * 1024
_SIGNATURE_RE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_USER_ID_RE = re.compile(r"^@[^:\s]+:[A-Za-z0-9.\-\[\]:]+$")
_TEXT_FIELDS = {"method": 64, "level": 64, "subject": 512}
REQUIRED = ("user_id", "subject", "method", "level", "verified_at")
# issue 11: set on a request a standby relays. A process that gets one while it is a standby too
# (two processes each thinking the other active, for the moment a takeover takes) answers 503
# instead of sending it back, so a request never goes round in circles.
RELAYED_HEADER = "X-Rulesbot-Relayed"
RELAYED_HEADERS = ("Content-Type", "X-Signature", "X-Timestamp")  # what the signature check reads
RELAY_TIMEOUT_S = 10.0
ALREADY_USED = "assertion already used: each signed assertion is accepted once"


class NoActiveBot(ConnectionError):
    """No other process is advertised as the active bot: nothing was sent to one."""


class ActiveBot(Protocol):
    """The active bot as a standby reaches it (bot.standby.Standby)."""

    @property
    def leader_url(self) -> str | None: ...

    async def relay(self, path: str, raw: bytes, headers: Mapping[str, str],
                    timeout: float = ...) -> tuple[int, bytes, str]: ...


class AssertionRefused(Exception):
    """A refused request: its HTTP status, errcode and the text the identity service is told."""

    def __init__(self, status: int, errcode: str, error: str) -> None:
        super().__init__(error)
        self.status, self.errcode, self.error = status, errcode, error


def _fail(status: int, errcode: str, error: str) -> AssertionRefused:
    return AssertionRefused(status, errcode, error)


class AssertionEndpoint:
    def __init__(self, identity: Identity, secret: bytes | None, clock: Callable[[], int]) -> None:
        self._identity = identity
        self._secret = secret
        self._clock = clock
        # issue 11: on a standby, the active bot the requests are relayed to (bot.standby.GateBinding)
        self.relay_to: ActiveBot | None = None

    async def handle(self, request: web.Request) -> web.Response:
        try:
            relay_to = self.relay_to
            if relay_to is not None:
                return await self._relay(request, relay_to)
            try:
                status, body = await self._handle(request)
            except sqlite3.OperationalError as exc:
                if not store_unavailable(exc):
                    raise  # a bad statement is a bug: aiohttp's 500, with the traceback logged
                raise self._cannot_commit(exc) from None
        except AssertionRefused as exc:
            log.info("identity assertion refused: %d %s %s", exc.status, exc.errcode, exc.error)
            return web.json_response({"errcode": exc.errcode, "error": exc.error}, status=exc.status)
        return web.json_response(body, status=status)

    async def _handle(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        if self._secret is None:
            raise _fail(403, "M_FORBIDDEN", "signed assertions are not enabled: identity.assertion_secret_file is not set")
        raw = await _read_body(request)
        now = self._clock()
        signature, timestamp_ms = self._authenticate(request, raw)
        if abs(now - timestamp_ms) > WINDOW_MS:
            raise _fail(401, "M_UNAUTHORIZED",
                        "assertion expired: X-Timestamp is more than 5 minutes from the server's clock")
        assertion = _parse(raw, now)
        key = "id:" + assertion["assertion_id"] if "assertion_id" in assertion else "sig:" + signature
        user_id = assertion["user_id"]
        answered = await self._answered_before(key, signature, assertion)
        if answered is not None:
            return answered
        try:
            known = await self._identity.known_user(user_id)
        except Exception as exc:  # the admin API cannot answer now: the service may retry later
            log.warning("cannot check whether %s exists: %s", user_id, exc)
            raise _fail(503, "M_UNKNOWN", "cannot check the account now; try again later") from None
        if not known:
            raise _fail(404, "M_NOT_FOUND", f"{user_id} is not an account of this homeserver")
        outcome = await self._identity.verify(
            user_id=user_id, verifier="assertion", method=assertion["method"], level=assertion["level"],
            subject=assertion["subject"], verified_at_ms=assertion["verified_at"], actor="assertion",
            attributes=assertion.get("attributes"), assertion_key=key,
            # Kept as used while its timestamp could still pass the window check.
            assertion_expires_at=timestamp_ms + WINDOW_MS + 1, assertion_signature=signature,
        )
        if outcome.refusal == "replayed":  # the same assertion raced in twice: the other one won
            answered = await self._answered_before(key, signature, assertion)
            if answered is None:  # pruned meanwhile: only a clock far off could do that
                raise _fail(401, "M_UNAUTHORIZED", ALREADY_USED)
            return answered
        if not outcome.recorded:
            raise _fail(403, "M_FORBIDDEN", _REFUSALS.get(outcome.refusal or "", "verification refused"))
        return 200, {"user_id": user_id, "verified": True}

    async def _answered_before(self, key: str, signature: str,
                               assertion: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """The answer to an assertion used already (None: it is not). The very request sent again
        (its signature covers the body and the timestamp) gets the first answer, recording
        nothing: the identity service could not know whether the first one arrived. Anything else
        under the same assertion_id is a replay."""
        user_id = assertion["user_id"]
        spent, in_force = await self._identity.answered_before(
            key, user_id, subject=assertion["subject"], method=assertion["method"], level=assertion["level"],
            verified_at_ms=assertion["verified_at"])
        if spent is None:
            return None
        if spent.signature is None or not hmac.compare_digest(spent.signature, signature):
            raise _fail(401, "M_UNAUTHORIZED", ALREADY_USED)
        if spent.outcome == VERIFIED:
            if not in_force:
                # Revoked or replaced since: a 200 would tell the identity service that the
                # verification this assertion made is the account's.
                raise _fail(401, "M_UNAUTHORIZED",
                            ALREADY_USED + " (the verification it made was revoked or replaced since)")
            log.info("identity assertion for %s sent again: answered as the first time, nothing recorded", user_id)
            return 200, {"user_id": user_id, "verified": True}
        if spent.outcome in _REFUSALS:
            raise _fail(403, "M_FORBIDDEN", _REFUSALS[spent.outcome])
        raise _fail(401, "M_UNAUTHORIZED", ALREADY_USED)

    @staticmethod
    def _cannot_commit(exc: sqlite3.OperationalError) -> AssertionRefused:
        from bot.store.pg import NotActive  # only PostgreSQL raises it, and only once it is loaded

        if isinstance(exc, NotActive):
            log.warning("identity assertion refused: this process is no longer the active bot (%s)", exc)
            return _fail(503, "M_UNKNOWN", "this bot process is no longer the active one (another took over);"
                                           " nothing was recorded, send the assertion again")
        log.warning("identity assertion refused: the database cannot commit now (%s: %s)", type(exc).__name__, exc)
        # A commit cut off half-way may have landed: the resend is answered as the first was if so.
        return _fail(503, "M_UNKNOWN", "the bot's database is unavailable now; send the assertion again")

    async def _relay(self, request: web.Request, active: ActiveBot) -> web.Response:
        """The active bot's answer to the request, sent on unchanged (its signature covers the
        body and the timestamp, so both go as they came). The signature is checked here first:
        only a request the identity service signed goes on, and only it can meet an answer that
        depends on the active (whose address stays in this log, never in an answer)."""
        if self._secret is None:
            raise _fail(403, "M_FORBIDDEN", "signed assertions are not enabled: identity.assertion_secret_file is not set")
        raw = await _read_body(request)
        self._authenticate(request, raw)
        if request.headers.get(RELAYED_HEADER):
            log.warning("identity assertion relayed here by another standby while this one is a standby too"
                        " (a takeover under way?); answered 503")
            raise _fail(503, "M_UNKNOWN", "no active bot to record the verification now; nothing was recorded,"
                                          " send the assertion again in a few seconds")
        headers = {name: request.headers[name] for name in RELAYED_HEADERS if name in request.headers}
        headers[RELAYED_HEADER] = "1"
        url = active.leader_url
        try:
            status, body, content_type = await active.relay(PATH, raw, headers, RELAY_TIMEOUT_S)
        except (NoActiveBot, aiohttp.ClientConnectorError) as exc:  # nothing reached an active bot
            log.warning("identity assertion: no active bot to relay it to (%s): %s: %s; answered 503",
                        url, type(exc).__name__, exc)
            raise _fail(503, "M_UNKNOWN", "this bot process is starting or standing by and cannot reach the active"
                                          " bot now; nothing was recorded, send the assertion again") from None
        except Exception as exc:  # sent, but no answer: the active may have recorded it all the same
            log.warning("identity assertion: the active bot (%s) gave no answer to it: %s: %s; answered 503",
                        url, type(exc).__name__, exc)
            raise _fail(503, "M_UNKNOWN", "the active bot did not answer in time; it may or may not have recorded"
                                          " the verification: send the assertion again (if it was recorded, the"
                                          " same request is answered as the first time)") from None
        log.info("identity assertion relayed to the active bot %s: it answered %d", url, status)
        return web.Response(status=status, body=body, content_type=content_type)

    def _authenticate(self, request: web.Request, raw: bytes) -> tuple[str, int]:
        """The signature's hex and the timestamp (ms) of a correctly signed request."""
        assert self._secret is not None
        given = _SIGNATURE_RE.match(request.headers.get("X-Signature", "").strip())
        timestamp = request.headers.get("X-Timestamp", "").strip()
        if given is None or not timestamp.isdigit() or len(timestamp) > 12:
            raise _fail(401, "M_UNAUTHORIZED",
                        "missing or malformed signature: send X-Timestamp (seconds) and X-Signature: sha256=<hex>")
        expected = hmac.new(self._secret, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given.group(1).lower()):
            raise _fail(401, "M_UNAUTHORIZED", "bad signature: not HMAC-SHA256 of <X-Timestamp>.<body> under the shared secret")
        return expected, int(timestamp) * 1000


async def _read_body(request: web.Request) -> bytes:
    """The body, read no further than MAX_BODY + 1 bytes: a chunked body (no Content-Length) of a
    MiB is refused after 64 KiB, not buffered whole, and never meets aiohttp's own plain-text 413
    (client_max_size), which has no errcode the identity service could read."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _fail(413, "M_TOO_LARGE", "request body is larger than 64 KiB")
    raw = bytearray()
    while chunk := await request.content.read(MAX_BODY + 1 - len(raw)):
        raw += chunk
        if len(raw) > MAX_BODY:
            raise _fail(413, "M_TOO_LARGE", "request body is larger than 64 KiB")
    return bytes(raw)


_REFUSALS = {
    "blacklisted": "verification refused: this identity is on the server's blacklist",
    "too_many_accounts": "verification refused: this identity already has the most verified accounts allowed",
    "unknown_user": "verification refused: not an account of this homeserver",
}


def _parse(raw: bytes, now: int) -> dict[str, Any]:
    """The assertion's fields, checked; AssertionRefused (400) naming the field otherwise. No error
    text quotes a value: the subject must never come back in an answer or a log line."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _fail(400, "M_BAD_JSON", "request body is not JSON") from None
    if not isinstance(body, dict):
        raise _fail(400, "M_BAD_JSON", "request body must be a JSON object")
    missing = [name for name in REQUIRED if body.get(name) in (None, "")]
    if missing:
        raise _fail(400, "M_MISSING_PARAM", f"missing field(s): {', '.join(missing)}")
    if not isinstance(body["user_id"], str) or not _USER_ID_RE.match(body["user_id"]):
        raise _fail(400, "M_INVALID_PARAM", "user_id must be a Matrix user ID like @name:example.org")
    for name, limit in _TEXT_FIELDS.items():
        value = body[name]
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise _fail(400, "M_INVALID_PARAM", f"{name} must be a non-empty string of at most {limit} characters")
    if not canonical_subject(body["subject"]):  # only invisible characters, spaces or dashes
        raise _fail(400, "M_INVALID_PARAM", "subject has no letters or digits")
    verified_at = _time_ms(body["verified_at"])
    if verified_at is None:
        raise _fail(400, "M_INVALID_PARAM",
                    "verified_at must be ms since the epoch or an ISO 8601 time, not before 2000-01-01")
    if verified_at > now + WINDOW_MS:
        raise _fail(400, "M_INVALID_PARAM", "verified_at is in the future")
    attributes = body.get("attributes")
    if attributes is not None and (
        not isinstance(attributes, dict)
        or not all(isinstance(v, (str, int, float, bool)) or v is None for v in attributes.values())
    ):
        raise _fail(400, "M_INVALID_PARAM", "attributes must be an object of strings, numbers or booleans")
    assertion_id = body.get("assertion_id")
    if assertion_id is not None and (not isinstance(assertion_id, str) or not 0 < len(assertion_id) <= 128):
        raise _fail(400, "M_INVALID_PARAM", "assertion_id must be a string of 1 to 128 characters")
    checked = {"user_id": body["user_id"], "subject": body["subject"], "method": body["method"].strip(),
               "level": body["level"].strip(), "verified_at": verified_at}
    if attributes:
        checked["attributes"] = attributes
    if assertion_id is not None:
        checked["assertion_id"] = assertion_id
    return checked


# No real-name verification predates 2000: an earlier time (year 1, 1900, a negative count) is a
# broken or forged clock, and would sort the record before every other.
EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z


def _time_ms(value: Any) -> int | None:
    """``value`` as ms since the epoch, or None when it is no time or one before EARLIEST_MS."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        ms = int(moment.timestamp() * 1000)
    else:
        return None
    return ms if ms >= EARLIEST_MS else None


def identity_endpoint(identity: Identity, settings: Settings, clock: Callable[[], int]) -> Callable[
        [web.Request], Awaitable[web.Response]]:
    """The gate's handler for ``PATH``; KeyFileError (at start-up) if the secret file is unsafe."""
    path = settings.identity.assertion_secret_file
    return AssertionEndpoint(identity, None if path is None else read_secret(path), clock).handle
