"""SQLite's SQL, as the repositories write it, turned into PostgreSQL's.

The repositories write one SQL (SQLite's); the PostgreSQL backend runs each statement through
``Translator.translate`` once (cached per SQL string) instead of every repository keeping two
copies. What it rewrites:

- ``?`` placeholders (outside string literals, quoted names and comments) → ``$1, $2, …``;
- ``INSERT OR IGNORE`` → ``… ON CONFLICT DO NOTHING``;
- ``INSERT OR REPLACE`` → ``… ON CONFLICT (<primary key>) DO UPDATE SET <other columns> = EXCLUDED.…``,
  or, for a table with other unique keys too, SQLite's own semantics: a DELETE of every row that
  conflicts on any key, then the INSERT;
- an ``INSERT`` into a table with an identity ``id`` → ``… RETURNING id`` (``cursor.lastrowid``);
- ``json_extract(col, '$.a.b')`` → ``(replace(col, '\\u0000', '\\ufffd'))::jsonb #>> '{a,b}'``; ``json_group_array(x)`` →
  ``COALESCE(json_agg(x), '[]'::json)`` (SQLite gives ``[]`` for no rows, json_agg NULL);
  ``json_object(…)`` → ``json_build_object(…)``.

And the DDL of a migration (``translate_ddl``): ``id INTEGER PRIMARY KEY`` → an identity column (SQLite's rowid alias),
``INTEGER`` → ``BIGINT`` (SQLite's integers are 64-bit; times are milliseconds), ``BLOB`` → ``BYTEA``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Translated:
    sql: str
    returns_id: bool  # RETURNING id was added: the first column of the first row is lastrowid
    names: tuple[str, ...] = ()  # the :name parameters, in $n order (empty: positional ?)
    # INSERT OR REPLACE into a table with unique keys besides its primary key: SQLite deletes
    # every row any of them conflicts with, then inserts; ``before`` is that DELETE, run first with
    # the parameters at ``before_params`` (ON CONFLICT can name only one key).
    before: str | None = None
    before_params: tuple[int, ...] = ()


@dataclass(frozen=True)
class Schema:
    """What the translator must know of the tables: their primary keys, and which have an identity id."""

    primary_keys: dict[str, tuple[str, ...]]
    identity_tables: frozenset[str]
    # Unique keys besides the primary key (not partial ones), per table.
    unique_keys: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)


def _code_spans(sql: str) -> list[tuple[bool, str]]:
    """``sql`` cut into (is_code, text) pieces: string literals, quoted names and comments are not code."""
    pieces: list[tuple[bool, str]] = []
    i, start, n = 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        end = -1
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # '' inside a literal is a quote
                        end += 2
                        continue
                    break
                end += 1
            end += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
        if end >= 0:
            if start < i:
                pieces.append((True, sql[start:i]))
            pieces.append((False, sql[i:end]))
            i = start = end
        else:
            i += 1
    if start < n:
        pieces.append((True, sql[start:]))
    return pieces


_PLACEHOLDER = re.compile(r"\?|(?<!:):(?P<name>[A-Za-z_]\w*)")


def number_placeholders(sql: str) -> tuple[str, tuple[str, ...]]:
    """``?`` → ``$1, $2, …`` in code only (a ``?`` inside a literal is text); SQLite's named
    ``:name`` → one ``$n`` per name, returned in order so a dict of parameters can be laid out."""
    out: list[str] = []
    names: list[str] = []
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        name = match["name"]
        if name is None:
            count += 1
            return f"${count}"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    for is_code, text in _code_spans(sql):
        out.append(_PLACEHOLDER.sub(number, text) if is_code else text)
    if count and names:
        raise ValueError(f"{sql!r} mixes ? and :name placeholders")
    return "".join(out), tuple(names)


def _call_end(sql: str, open_paren: int) -> int:
    """The index just past the parenthesis closing the one at ``open_paren`` (literals skipped)."""
    depth, i = 0, open_paren
    quote = ""
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced parentheses in {sql!r}")


def _rewrite_calls(sql: str, name: str, rewrite) -> str:
    pattern = re.compile(rf"\b{name}\s*\(", re.IGNORECASE)
    while (match := pattern.search(sql)) is not None:
        open_paren = match.end() - 1
        end = _call_end(sql, open_paren)
        sql = sql[:match.start()] + rewrite(sql[open_paren + 1:end - 1]) + sql[end:]
    return sql


_JSON_PATH = re.compile(r"^(?P<arg>.+?)\s*,\s*'\$\.(?P<path>[A-Za-z0-9_.]+)'\s*$", re.DOTALL)


def _json_extract(args: str) -> str:
    match = _JSON_PATH.match(args)
    if match is None:
        raise ValueError(f"json_extract({args}) is not json_extract(<expr>, '$.<key>[.<key>…]')")
    keys = ",".join(match["path"].split("."))
    # PostgreSQL refuses to parse a document holding the escape \u0000 anywhere (a Matrix text
    # quoted into a payload may hold one): the escape is read as U+FFFD, for this extraction only
    # (the stored text keeps it). A literal backslash followed by "u0000" would read as "\ufffd".
    return f"((replace(({match['arg']}), '\\u0000', '\\ufffd'))::jsonb #>> '{{{keys}}}')"


_INSERT = re.compile(r"^\s*INSERT\s+(?:OR\s+(?P<or>IGNORE|REPLACE)\s+)?INTO\s+(?P<table>\w+)\s*(?:\((?P<cols>[^)]*)\))?",
                     re.IGNORECASE)


class Translator:
    """Translates and caches each statement for one database's schema."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._cache: dict[str, Translated] = {}

    def translate(self, sql: str) -> Translated:
        found = self._cache.get(sql)
        if found is None:
            found = self._cache[sql] = self._translate(sql)
        return found

    def _translate(self, sql: str) -> Translated:
        out = _rewrite_functions(sql)
        returns_id = False
        before, before_params = None, ()
        insert = _INSERT.match(out)
        if insert is not None:
            table, conflict = insert["table"].lower(), insert["or"]
            values = out[insert.end():]
            out = out[:insert.start()] + "INSERT INTO " + out[insert.start("table"):]
            body = out.rstrip().rstrip(";")
            if conflict is not None and conflict.upper() == "IGNORE":
                body += " ON CONFLICT DO NOTHING"
            elif conflict is not None and self.schema.unique_keys.get(table):
                before, before_params = self._replace_deletes(table, insert["cols"], values)
            elif conflict is not None:
                body += self._upsert(table, insert["cols"])
            if table in self.schema.identity_tables and not re.search(r"\bRETURNING\b", body, re.IGNORECASE):
                body += " RETURNING id"
                returns_id = True
            out = body
        numbered, names = number_placeholders(out)
        return Translated(numbered, returns_id, names, before, before_params)

    def _replace_deletes(self, table: str, columns: str | None, rest: str) -> tuple[str, tuple[int, ...]]:
        """The DELETE of every row an INSERT OR REPLACE … VALUES (?, …) conflicts with, on any key."""
        values = re.fullmatch(r"\s*VALUES\s*\(([?,\s]*)\)\s*;?\s*", rest, re.IGNORECASE)
        names = [c.strip().lower() for c in (columns or "").split(",")]
        if values is None or values[1].count("?") != len(names) or not columns:
            raise ValueError(f"INSERT OR REPLACE INTO {table} (a table with several unique keys) needs"
                             " (columns) VALUES (?, …) with one ? per column")
        keys = (self.schema.primary_keys.get(table, ()), *self.schema.unique_keys[table])
        conditions, params = [], []
        for key in keys:
            if key and all(column in names for column in key):
                parts = []
                for column in key:
                    params.append(names.index(column))
                    parts.append(f"{column} = ${len(params)}")
                conditions.append("(" + " AND ".join(parts) + ")")
        return f"DELETE FROM {table} WHERE {' OR '.join(conditions) or 'FALSE'}", tuple(params)

    def _upsert(self, table: str, columns: str | None) -> str:
        key = self.schema.primary_keys.get(table)
        if not key or columns is None:
            raise ValueError(f"INSERT OR REPLACE INTO {table} needs a column list and a table with a primary key")
        others = [c.strip() for c in columns.split(",") if c.strip().lower() not in key]
        if not others:
            return f" ON CONFLICT ({', '.join(key)}) DO NOTHING"
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in others)
        return f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments}"


def _rewrite_functions(sql: str) -> str:
    if "json_" not in sql.lower():
        return sql
    sql = _rewrite_calls(sql, "json_extract", _json_extract)
    sql = _rewrite_calls(sql, "json_group_array", lambda args: f"COALESCE(json_agg({args}), '[]'::json)")
    return _rewrite_calls(sql, "json_object", lambda args: f"json_build_object({args})")


_IDENTITY = re.compile(r"\bid\s+INTEGER\s+PRIMARY\s+KEY\b", re.IGNORECASE)
_INTEGER = re.compile(r"\bINTEGER\b", re.IGNORECASE)
_BLOB = re.compile(r"\bBLOB\b", re.IGNORECASE)


def translate_ddl(sql: str) -> str:
    """A migration's SQLite DDL as PostgreSQL's (comments and literals left as they are)."""
    out = []
    for is_code, text in _code_spans(sql):
        if is_code:
            text = _IDENTITY.sub("id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", text)
            text = _INTEGER.sub("BIGINT", text)
            text = _BLOB.sub("BYTEA", text)
        out.append(text)
    return "".join(out)
