"""Command line: python -m bot run | check-config | demo | export | audit verify | audit head |
consent-templates."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import signal
import sys

from bot.config import ConfigError, load_config
from bot.identity.keys import KeyFileError
from bot.store import DatabaseTooNew


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Rules-enforcing bot for Matrix homeservers.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the gate and the bot")
    run.add_argument("--config", required=True, help="YAML config file")
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", required=True, help="YAML config file")
    demo = commands.add_parser("demo", help="start a throw-away local Synapse with the gate and the bot")
    demo.add_argument("--port", type=int, default=8008, help="Synapse's client port (default 8008; a free one if that is taken, or with 0)")
    export = commands.add_parser("export", help="export records for the authority (CSV or JSON Lines)")
    export.add_argument("--config", required=True, help="YAML config file")
    export.add_argument("--kind", required=True, choices=["agreements", "cases", "filings", "reports", "appeals", "audit",
                                                               "verifications"])
    export.add_argument("--format", required=True, choices=["csv", "jsonl"],
                        help="csv: for spreadsheets, a cell starting with = + - @ tab or CR gets a leading ' ;"
                             " jsonl: every value exactly as recorded")
    export.add_argument("--since", help="from this date (inclusive), e.g. 2026-11-01")
    export.add_argument("--until", help="up to this date (exclusive)")
    export.add_argument("--output", help="file to write (default: standard output)")
    export.add_argument("--bom", action="store_true", help="start CSV with a UTF-8 byte-order mark (for spreadsheets)")
    audit = commands.add_parser("audit", help="the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="check the audit log's hash chain and its recorded heads")
    verify.add_argument("--config", required=True, help="YAML config file")
    verify.add_argument("--head", action="append", default=[], metavar="ID:HASH",
                        help="also check against a head kept elsewhere (as `audit head` printed it); repeatable")
    head = audit_commands.add_parser("head", help="print the audit log's head (id:hash time) to keep elsewhere")
    head.add_argument("--config", required=True, help="YAML config file")
    # --- PostgreSQL (issue 11) ---
    migrate = commands.add_parser("migrate-db", help="copy every record into a new, empty database and verify the copy")
    migrate.add_argument("--from", dest="source", required=True, metavar="URL",
                         help="the database now: sqlite:///path/bot.db (or a path) or postgresql://…")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL",
                         help="the new, empty database: postgresql://user@host:5432/db (the password from PGPASSWORD"
                              " or ~/.pgpass keeps it out of the process list) or sqlite:///path")
    # --- end PostgreSQL ---
    # --- consent at registration (bot.consent) ---
    consent = commands.add_parser("consent-templates", help="write Synapse's user_consent policy pages from the agreement")
    consent.add_argument("--out", required=True, help="the directory Synapse's user_consent.template_dir names")
    consent.add_argument("--config", help="YAML config file: its agreement.version and texts (default: version 1,"
                                          " the shipped texts)")
    # --- identity (issue 9) ---
    identity = commands.add_parser("identity", help="real-name verification records")
    identity_commands = identity.add_subparsers(dest="identity_command", required=True)
    reveal = identity_commands.add_parser(
        "reveal", help="print an account's kept identity attributes (recorded in the audit log first)")
    reveal.add_argument("user", help="the account, @name:server")
    reveal.add_argument("--reason", required=True, help="why they are read (kept in the audit log)")
    reveal.add_argument("--config", required=True, help="YAML config file")
    # --- end identity ---
    return parser


def _logging(level: str) -> None:
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a bot that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # nio logs every 429 and sync at INFO; keep the bot's own lines readable.
    logging.getLogger("nio").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters at DEBUG: blind indexes, encrypted
    # attributes and message texts would reach the log with log_level DEBUG (review 9 #19).
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)


async def _audit(args: argparse.Namespace) -> int:
    """`audit verify` and `audit head`: the chain, checked against every head kept of it."""
    from bot.export import iso
    from bot.store import Store
    from bot.store.audit import Head, HeadFile, default_head_file, stored_head, verify

    try:
        given = [Head.parse(text) for text in getattr(args, "head", [])]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = load_config(args.config)
    head_file = HeadFile(settings.records.audit_head_file or default_head_file(settings.database.path))
    store = await Store.open(settings.database.location(), head_file.path)
    try:
        # The heads are read before the chain, so a row the running bot commits meanwhile can only
        # make the chain longer than a head, never a head point past the chain.
        heads: list[tuple[str, Head]] = []
        in_db = await stored_head(store.db.conn)
        if in_db is not None:
            heads.append(("the database", in_db))
        in_file = await asyncio.to_thread(head_file.read)
        heads += [(f"the head file {head_file.path}", h) for h in in_file or []]
        heads += [("--head", h) for h in given]
        result = await verify(store.db.conn, heads)
    finally:
        await store.close()
    if not result.ok:
        print(f"audit log broken at row {result.bad_row}: {result.problem} ({result.rows_checked} rows before it are intact)")
        return 1
    if in_file is None and in_db is not None:
        # Whoever cut the newest rows can fix the database's own head record to match, so a
        # missing file is not "nothing to compare": it is the one witness gone.
        print(f"audit log unverified: the head file {head_file.path} is missing, but the database recorded a head"
              f" (row {in_db.row_id}); restore the file, or check against a head kept elsewhere with --head")
        return 1
    assert result.head is not None
    if args.audit_command == "head":
        print(f"{result.head.token()} {iso(result.head.created_at) or '-'}")
        return 0
    print(f"audit log intact: {result.rows_checked} rows checked")
    print(f"head {result.head.token()}; checked against {len(heads)} recorded head(s)")
    return 0


async def _export(args: argparse.Namespace) -> int:
    import time

    from bot.export import ExportError, export, parse_date
    from bot.identity.reveal import os_actor
    from bot.store import Store

    settings = load_config(args.config)
    try:
        since = None if args.since is None else parse_date(args.since)
        until = None if args.until is None else parse_date(args.until)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = await Store.open(settings.database.location(), settings.records.audit_head_file)
    try:
        data, rows = await export(store, kind=args.kind, fmt=args.format, since=since, until=until, bom=args.bom,
                                  actor=os_actor(), now=int(time.time() * 1000))
    finally:
        await store.close()
    if args.output:
        _write_private(args.output, data)
        print(f"wrote {rows} {args.kind} row(s) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _write_private(path: str, data: bytes) -> None:
    """Write an export owner-only (0600): it holds the records, and copies of reported messages."""
    import os
    import stat

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        # An existing file keeps its old mode through O_CREAT; a device (/dev/stdout) is left alone.
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
        out.write(data)


def _consent_templates(args: argparse.Namespace) -> int:
    """`consent-templates`: Synapse's policy pages, one line per file written or already current."""
    from pathlib import Path

    from bot.config import AgreementConfig
    from bot.consent.templates import TemplateError, texts_for, write_templates

    settings = load_config(args.config) if args.config else None
    version = settings.agreement.version if settings is not None else AgreementConfig().version
    try:
        written = write_templates(Path(args.out), version, texts_for(settings))
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for page in written:
        print(f"{'wrote' if page.changed else 'unchanged'} {page.path}")
    print(f"agreement version {version}: set user_consent.version to {version!r} and template_dir to {args.out}")
    return 0


async def _identity_reveal(args: argparse.Namespace) -> int:  # issue 9
    """`identity reveal`: the audit record is committed by reveal() before anything is printed."""
    import json
    import time

    from bot.export import iso
    from bot.identity.keys import AttributesUnreadable, IdentityKeys
    from bot.identity.reveal import RevealError, os_actor, reveal
    from bot.store import Store

    settings = load_config(args.config)
    keys = IdentityKeys.load(settings.identity_key_path())
    store = await Store.open(settings.database.location(), settings.records.audit_head_file)
    try:
        found = await reveal(store, keys, user_id=args.user, reason=args.reason, actor=os_actor(),
                             now_ms=int(time.time() * 1000))
    except (RevealError, AttributesUnreadable) as exc:
        print(f"error: {exc} (this attempt is in the audit log)", file=sys.stderr)
        return 1
    finally:
        await store.close()
    for item in found:
        print(f"record {item.record_id} ({item.verifier}, {item.method}, verified {iso(item.verified_at)}): "
              + json.dumps(item.attributes, ensure_ascii=False, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "identity":  # issue 9: a blank (or invisible) reason is no reason
        from bot.identity.reveal import has_visible_text

        if not has_visible_text(args.reason):
            _parser().error("identity reveal: --reason must say why the attributes are read, in visible characters")
    try:
        if args.command == "check-config":
            settings = load_config(args.config)
            print(f"{args.config}: OK (homeserver {settings.homeserver.url}, bot {settings.homeserver.user_id})")
            return 0
        if args.command == "run":
            # The restart window: the gate answers nobody until the rules' tables exist.
            from bot.foldcache import preload

            preload()
            settings = load_config(args.config)
            _logging(settings.log_level)
            from bot.gatefirst import run  # the gate first: bot.service (and nio) once it answers

            asyncio.run(run(settings))
            return 0
        if args.command == "demo":
            _logging("INFO")
            from bot.demo import demo

            return asyncio.run(demo(args.port))
        if args.command == "export":
            return asyncio.run(_export(args))
        if args.command == "audit":
            return asyncio.run(_audit(args))
        if args.command == "migrate-db":  # issue 11
            from bot.store.copy import migrate_db_command

            return asyncio.run(migrate_db_command(args.source, args.target))
        if args.command == "identity":  # issue 9
            return asyncio.run(_identity_reveal(args))
        if args.command == "consent-templates":
            return _consent_templates(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatabaseTooNew as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyFileError as exc:  # issue 9: an identity key or secret that is unsafe or missing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
