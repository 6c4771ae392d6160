"""The bot's numbered record of every change to its PolicyState, kept in a bounded ring.

Pure (no I/O, no event loop): attached to the state with ``PolicyState.track``, it encodes each
changed entry at the moment of the change (so a record carries the value of that moment) and
gives it the next sequence number. The epoch names this process's numbering: a replica that sees
another epoch, or asks for numbers older than the ring, takes a new snapshot.
"""

from __future__ import annotations

import os
import time
from collections import deque
from itertools import islice
from typing import Any, Callable, Iterator

from bot.policy.state import PolicyState
import orjson

from bot.replica.protocol import DELETED, PROTOCOL_VERSION, SPECS, change_record, snapshot

RING_SIZE = 100_000  # changes kept for replicas that fall behind; older ones re-snapshot
SNAPSHOT_CHUNK = 5_000  # entries per snapshot piece: about a millisecond of the event loop


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


class ChangesGone(Exception):
    """The changes asked for are older than the ring (or of another epoch): snapshot again."""


def new_epoch() -> str:
    """Unique per process start: the start time and a random part (two starts in one ms differ)."""
    return f"{int(time.time() * 1000):x}-{os.urandom(4).hex()}"


class ChangeLog:
    def __init__(self, state: PolicyState, ring_size: int = RING_SIZE, epoch: str | None = None) -> None:
        self.state = state
        self.epoch = epoch or new_epoch()
        self.seq = 0
        self._ring: deque[tuple[int, str, Any, Any]] = deque(maxlen=ring_size)
        # Called after each change (the publisher wakes its long polls); synchronous and cheap.
        self.on_change: Callable[[], None] = lambda: None
        state.track(self.note)

    def note(self, field_name: str, key: Any) -> None:
        """The sink PolicyState calls: record the entry's value now (or its absence)."""
        spec = SPECS.get(field_name)
        if spec is None:  # a local-only field
            return
        container = getattr(self.state, field_name)
        if key is None or spec.kind == "value":
            wire_key, value = None, spec.whole.encode(container)
        else:
            assert spec.key is not None
            wire_key = spec.key.encode(key)
            if key not in container:
                value = DELETED
            elif spec.kind == "set":
                value = True
            else:
                assert spec.item is not None
                value = spec.item.encode(container[key])
        self.seq += 1
        self._ring.append((self.seq, field_name, wire_key, value))
        self.on_change()

    def snapshot(self) -> dict[str, Any]:
        """The whole state at the current seq, encoded in one go (tests, small states)."""
        return snapshot(self.state, self.epoch, self.seq)

    def snapshot_pieces(self, chunk: int = SNAPSHOT_CHUNK) -> Iterator[bytes]:
        """The snapshot as JSON, in pieces of at most ``chunk`` entries, so the caller can let
        the gate answer between pieces (100,000 accounts take a few hundred ms to encode: too
        long to hold the event loop).

        The state may change between pieces. The snapshot says the seq of its start, and each
        entry is read when its piece is made, so it holds that entry's value at the start or a
        later one; every change after the start is in the change log, and a change record is the
        whole value of its entry, so replaying the changes after the snapshot's seq ends at the
        bot's state all the same (tests/unit/test_replica_protocol.py interleaves changes)."""
        seq = self.seq
        yield b'{"version":%d,"epoch":%s,"seq":%d,"state":{' % (PROTOCOL_VERSION, _dumps(self.epoch), seq)
        for index, (name, spec) in enumerate(SPECS.items()):
            container = getattr(self.state, name)
            prefix = (b"," if index else b"") + _dumps(name) + b":"
            plain = spec.kind == "set" or (spec.item is not None and spec.item.plain_out)
            # Entries encoded in Python (an account's measures: a few objects each) cost ten times
            # a plain string's: fewer of them to a piece.
            size = chunk if plain else max(1, chunk // 10)
            if spec.kind == "value" or len(container) <= size:
                yield prefix + _dumps(spec.whole.encode(container))
                continue
            assert spec.key is not None
            keys = list(container)  # a copy: the container may change while the pieces are made
            opening, closing = (b"{", b"}") if spec.kind == "dict" else (b"[", b"]")
            yield prefix + opening
            written = False
            for start in range(0, len(keys), size):
                current = getattr(self.state, name)  # replaced meanwhile? its changes are logged
                part = [k for k in keys[start:start + size] if k in current]
                if spec.kind == "dict" and plain and spec.key.identity:
                    body = _dumps({k: current[k] for k in part})[1:-1]
                elif spec.kind == "dict":
                    assert spec.item is not None
                    body = _dumps({spec.key.encode(k): spec.item.encode(current[k]) for k in part})[1:-1]
                else:
                    body = _dumps([spec.key.encode(k) for k in part])[1:-1]
                yield (b"," if written and body else b"") + body
                written = written or bool(body)
            yield closing
        yield b"}}"

    def since(self, seq: int, limit: int = 10_000) -> list[dict[str, Any]]:
        """The changes after ``seq``, oldest first, at most ``limit`` (the replica asks again from
        the last one). ChangesGone if some of them have left the ring, or ``seq`` is ahead of
        this epoch's numbering (a replica of an earlier bot process)."""
        if seq > self.seq or seq < 0:
            raise ChangesGone(f"seq {seq} is not of this epoch (now at {self.seq})")
        if seq == self.seq:
            return []
        oldest = self._ring[0][0] if self._ring else self.seq + 1
        if seq + 1 < oldest:
            raise ChangesGone(f"changes after {seq} are no longer kept (oldest kept: {oldest})")
        start = seq + 1 - oldest  # ring entries have consecutive numbers
        if start > len(self._ring) // 2:  # most polls ask for the newest few: walk from the end
            tail = list(islice(reversed(self._ring), 0, len(self._ring) - start))[::-1]
            return [change_record(*entry) for entry in tail[:limit]]
        return [change_record(*entry) for entry in islice(self._ring, start, start + limit)]

    @property
    def oldest(self) -> int:
        return self._ring[0][0] if self._ring else self.seq + 1
