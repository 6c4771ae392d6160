"""Containers that tell a sink which key changed: how PolicyState reports every mutation.

Only writes are overridden; reads (``in``, ``[]``, ``get``) are the built-in dict and set
methods, so the gate's lookups cost what they cost before. A sink is called after each change with
the field's name and the key (a set's member), or ``None`` when the whole field changed; it reads
the new value itself, so a write that leaves nothing (a deleted key) reads as a deletion.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

Sink = Callable[[str, Any], None]


class TrackedDict(dict):  # type: ignore[type-arg]
    __slots__ = ("_field", "_sink")

    def __init__(self, field_name: str, sink: Sink, items: Any = ()) -> None:
        super().__init__(items)
        self._field = field_name
        self._sink = sink

    def __reduce__(self) -> Any:  # a copy or a pickle is a plain dict: it reports to nobody
        return (dict, (dict(self),))

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, value)
        self._sink(self._field, key)

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, key)
        self._sink(self._field, key)

    def pop(self, key: Any, *default: Any) -> Any:
        present = key in self
        value = dict.pop(self, key, *default)
        if present:
            self._sink(self._field, key)
        return value

    def popitem(self) -> tuple[Any, Any]:
        key, value = dict.popitem(self)
        self._sink(self._field, key)
        return key, value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return dict.__getitem__(self, key)
        self[key] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> "TrackedDict":
        self.update(other)
        return self

    def clear(self) -> None:
        dict.clear(self)
        self._sink(self._field, None)


class TrackedSet(set):  # type: ignore[type-arg]
    __slots__ = ("_field", "_sink")

    def __init__(self, field_name: str, sink: Sink, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self._field = field_name
        self._sink = sink

    def __reduce__(self) -> Any:
        return (set, (set(self),))

    def add(self, member: Any) -> None:
        if member not in self:
            set.add(self, member)
            self._sink(self._field, member)

    def discard(self, member: Any) -> None:
        if member in self:
            set.discard(self, member)
            self._sink(self._field, member)

    def remove(self, member: Any) -> None:
        set.remove(self, member)
        self._sink(self._field, member)

    def pop(self) -> Any:
        member = set.pop(self)
        self._sink(self._field, member)
        return member

    def clear(self) -> None:
        set.clear(self)
        self._sink(self._field, None)

    def update(self, *others: Iterable[Any]) -> None:
        for other in others:
            for member in other:
                self.add(member)

    def difference_update(self, *others: Iterable[Any]) -> None:
        for other in others:
            for member in list(other):
                self.discard(member)

    def intersection_update(self, *others: Iterable[Any]) -> None:
        keep = set(self).intersection(*others)
        for member in [m for m in self if m not in keep]:
            self.discard(member)

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        for member in set(other):
            if member in self:
                self.discard(member)
            else:
                self.add(member)

    def __ior__(self, other: Any) -> "TrackedSet":
        self.update(other)
        return self

    def __isub__(self, other: Any) -> "TrackedSet":
        self.difference_update(other)
        return self

    def __iand__(self, other: Any) -> "TrackedSet":
        self.intersection_update(other)
        return self

    def __ixor__(self, other: Any) -> "TrackedSet":
        self.symmetric_difference_update(other)
        return self


def changed_keys(old: Any, new: Any) -> Iterable[Any] | None:
    """The keys that differ between two dicts or two sets, or None if they are not both one kind
    (the whole field changed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed = [k for k, v in new.items() if k not in old or old[k] is not v and old[k] != v]
        return changed + [k for k in old if k not in new]
    if isinstance(old, (set, frozenset)) and isinstance(new, (set, frozenset)) and type(new) is not frozenset:
        return old ^ new
    return None
