"""Numbered, described schema migrations. Never edit one that has landed: add the next number.

Each runs in its own transaction together with the bump of ``PRAGMA user_version``, so a crash
leaves the database at the previous version, never half-way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str
    # PostgreSQL's form, only where bot.store.sqlpg.translate_ddl cannot make it from ``sql`` (a
    # trigger, a SQLite table rebuild): None runs the translated ``sql`` (issue 11).
    postgres: str | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "agreement gate: key-value state, acceptances, prompts, DM rooms, room-mode mutes, audit log",
        """
        CREATE TABLE kv (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        -- Append-only: one row per acceptance. The current state is the newest row per user.
        CREATE TABLE agreement_acceptances (
            id          INTEGER PRIMARY KEY,
            user_id     TEXT NOT NULL,
            version     TEXT NOT NULL,
            text_sha256 TEXT NOT NULL,
            accepted_at INTEGER NOT NULL,          -- ms since the epoch
            event_id    TEXT NOT NULL UNIQUE,      -- the event that carried the acceptance
            room_id     TEXT NOT NULL,
            method      TEXT NOT NULL CHECK (method IN ('command', 'reaction'))
        );
        CREATE INDEX agreement_acceptances_user ON agreement_acceptances (user_id, accepted_at);
        -- Every agreement message sent to a user (the first prompt, and each !rules answer), so a
        -- ✅ reaction can be matched to the user and version it was sent for.
        CREATE TABLE agreement_prompts (
            event_id TEXT PRIMARY KEY,
            user_id  TEXT NOT NULL,
            version  TEXT NOT NULL,
            room_id  TEXT NOT NULL,
            sent_at  INTEGER NOT NULL
        );
        CREATE INDEX agreement_prompts_user ON agreement_prompts (user_id, version);
        CREATE TABLE dm_rooms (
            user_id    TEXT PRIMARY KEY,
            room_id    TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL
        );
        -- Power-level mutes the bot applied in room mode, with what to restore.
        CREATE TABLE room_mutes (
            room_id        TEXT NOT NULL,
            user_id        TEXT NOT NULL,
            previous_level INTEGER,                -- NULL: the user had no entry of its own
            muted_level    INTEGER NOT NULL,
            reason         TEXT NOT NULL,
            muted_at       INTEGER NOT NULL,
            PRIMARY KEY (room_id, user_id)
        );
        CREATE TABLE audit_log (
            id         INTEGER PRIMARY KEY,
            created_at INTEGER NOT NULL,
            actor      TEXT NOT NULL,
            action     TEXT NOT NULL,
            target     TEXT NOT NULL,
            details    TEXT NOT NULL,              -- canonical JSON
            prev_hash  TEXT NOT NULL,
            hash       TEXT NOT NULL
        );
        CREATE INDEX audit_log_target ON audit_log (target, created_at);
        """,
    ),
    Migration(
        2,
        "sanctions: cases, their ends, closure confirmations",
        """
        -- Append-only: a case is never updated; ending it is a row in case_ends.
        CREATE TABLE cases (
            id         INTEGER PRIMARY KEY,
            target     TEXT NOT NULL,
            kind       TEXT NOT NULL CHECK (kind IN ('warn', 'restrict', 'suspend', 'close')),
            actor      TEXT NOT NULL,               -- a moderator's user ID, or 'ladder'
            reason     TEXT NOT NULL,
            evidence   TEXT,                        -- JSON copy of the offending event, or NULL
            created_at INTEGER NOT NULL,
            expires_at INTEGER,                     -- NULL: until lifted
            rate       TEXT,                        -- 'N/period' for a rate-capped restriction
            options    TEXT NOT NULL DEFAULT '{}',  -- JSON: {"erase": true} for a closure
            caused_by  TEXT NOT NULL DEFAULT '[]'   -- JSON list of the cases the ladder counted
        );
        CREATE INDEX cases_target ON cases (target, created_at);
        CREATE TABLE case_ends (
            case_id  INTEGER PRIMARY KEY REFERENCES cases (id),
            ended_at INTEGER NOT NULL,
            actor    TEXT NOT NULL,
            how      TEXT NOT NULL CHECK (how IN ('lifted', 'expired')),
            reason   TEXT NOT NULL
        );
        -- A closure waits for !confirm <code>; the request is kept whether or not it is used.
        CREATE TABLE closure_requests (
            code         TEXT PRIMARY KEY,
            target       TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            reason       TEXT NOT NULL,
            erase        INTEGER NOT NULL,
            evidence     TEXT,
            caused_by    TEXT NOT NULL DEFAULT '[]',
            created_at   INTEGER NOT NULL,
            expires_at   INTEGER NOT NULL,
            used_at      INTEGER
        );
        """,
    ),
    Migration(
        3,
        "reports, appeals, evidence retention",
        """
        -- Evidence (copied message content) is purged after records.evidence_days; the case stays.
        ALTER TABLE cases ADD COLUMN evidence_purged_at INTEGER;
        ALTER TABLE closure_requests ADD COLUMN report_id INTEGER;
        -- One report per reported event; every reporter is kept in report_reporters.
        CREATE TABLE reports (
            id                 INTEGER PRIMARY KEY,
            event_id           TEXT NOT NULL UNIQUE,
            room_id            TEXT NOT NULL,
            sender             TEXT NOT NULL,     -- who posted the reported event
            snapshot           TEXT,              -- JSON copy of the event; NULL once purged
            snapshot_purged_at INTEGER,
            created_at         INTEGER NOT NULL,
            resolved_at        INTEGER,           -- set once, with an audit record
            resolved_by        TEXT,
            resolution         TEXT CHECK (resolution IN ('dismissed', 'actioned')),
            resolution_reason  TEXT,
            case_id            INTEGER REFERENCES cases (id)
        );
        CREATE INDEX reports_open ON reports (resolved_at, created_at);
        CREATE TABLE report_reporters (
            report_id   INTEGER NOT NULL REFERENCES reports (id),
            reporter    TEXT NOT NULL,
            reason      TEXT NOT NULL,
            reported_at INTEGER NOT NULL,
            source      TEXT NOT NULL CHECK (source IN ('command', 'homeserver')),
            PRIMARY KEY (report_id, reporter)
        );
        CREATE TABLE appeals (
            id              INTEGER PRIMARY KEY,
            case_id         INTEGER NOT NULL REFERENCES cases (id),
            appellant       TEXT NOT NULL,
            text            TEXT NOT NULL,
            created_at      INTEGER NOT NULL,
            decided_at      INTEGER,              -- set once, with an audit record
            decided_by      TEXT,
            decision        TEXT CHECK (decision IN ('granted', 'denied')),
            decision_reason TEXT
        );
        CREATE UNIQUE INDEX appeals_one_open_per_case ON appeals (case_id) WHERE decided_at IS NULL;
        """,
    ),
    Migration(
        4,
        "public accounts: applications, the filing register, channels",
        """
        CREATE TABLE applications (
            id          INTEGER PRIMARY KEY,
            applicant   TEXT NOT NULL,
            kind        TEXT NOT NULL CHECK (kind IN ('public', 'news')),
            category    TEXT,                     -- public: the category applied for
            name        TEXT,                     -- public: the account's public name
            tier        TEXT CHECK (tier IN ('publisher', 'reposter')),  -- news
            licence     TEXT,                     -- news: the licence number
            created_at  INTEGER NOT NULL,
            decided_at  INTEGER,                  -- set once, with an audit record
            decided_by  TEXT,
            decision    TEXT CHECK (decision IN ('approved', 'rejected')),
            note        TEXT
        );
        CREATE UNIQUE INDEX applications_one_pending ON applications (applicant, kind) WHERE decided_at IS NULL;
        -- The register: one row per filing; a news tier is a later filing of the same owner.
        CREATE TABLE filings (
            id             INTEGER PRIMARY KEY,
            filing_number  TEXT NOT NULL UNIQUE,
            owner          TEXT NOT NULL,
            category       TEXT NOT NULL,
            name           TEXT NOT NULL,
            tier           TEXT CHECK (tier IN ('publisher', 'reposter')),
            licence        TEXT,
            reviewer       TEXT NOT NULL,
            approved_at    INTEGER NOT NULL,
            application_id INTEGER NOT NULL REFERENCES applications (id),
            revoked_at     INTEGER,
            revoked_by     TEXT,
            revoke_reason  TEXT
        );
        CREATE INDEX filings_owner ON filings (owner, revoked_at);
        CREATE TABLE channels (
            room_id  TEXT PRIMARY KEY,
            owner    TEXT NOT NULL,
            added_at INTEGER NOT NULL
        );
        CREATE INDEX channels_owner ON channels (owner);
        """,
    ),
    Migration(
        5,
        "exactly-once effects: events handled once, and the journal of effects to carry out",
        """
        -- One row per event the bot acted on, written in the transaction of what it caused: a
        -- replayed sync batch finds it and changes nothing.
        -- The key holds the handler too: a command posted in a protected room is handled once as a
        -- command and once by room mode.
        CREATE TABLE handled_events (
            event_id    TEXT NOT NULL,
            kind        TEXT NOT NULL,
            handled_at  INTEGER NOT NULL,
            PRIMARY KEY (event_id, kind)
        );
        CREATE INDEX handled_events_time ON handled_events (handled_at);
        -- Intents committed with the record that causes them; one executor carries them out in
        -- id order per target and marks them done (or failed, once, with the error).
        CREATE TABLE effects (
            id              INTEGER PRIMARY KEY,
            idempotency_key TEXT NOT NULL UNIQUE,
            kind            TEXT NOT NULL,
            target          TEXT NOT NULL,
            payload         TEXT NOT NULL,
            status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL DEFAULT 0,
            last_error      TEXT,
            created_at      INTEGER NOT NULL,
            done_at         INTEGER
        );
        CREATE INDEX effects_pending ON effects (target, id) WHERE status = 'pending';
        """,
    ),
    # --- identity (issue 9): real-name verification, blind-indexed ---------------------------------
    Migration(
        6,
        "identity: verifications and their revocations, the identity blacklist, used assertions",
        """
        -- Append-only: a verification or a revocation is a row; an account's state is its newest
        -- row. The subject is never stored: only its blind index (HMAC under the identity key
        -- file), NULL for a manual check; kept attributes only as AES-GCM ciphertext.
        CREATE TABLE identity_records (
            id            INTEGER PRIMARY KEY,
            user_id       TEXT NOT NULL,
            kind          TEXT NOT NULL CHECK (kind IN ('verified', 'revoked')),
            verifier      TEXT NOT NULL CHECK (verifier IN ('assertion', 'sso', 'manual')),
            method        TEXT,                   -- verified: how the person was checked
            level         TEXT,                   -- verified: the assurance level
            verified_at   INTEGER,                -- verified: when the verifier checked (ms)
            recorded_at   INTEGER NOT NULL,
            actor         TEXT NOT NULL,
            subject_index TEXT,
            attributes    BLOB,
            note          TEXT                    -- a manual check's note, or why it was revoked
        );
        CREATE INDEX identity_records_user ON identity_records (user_id, id);
        CREATE INDEX identity_records_subject ON identity_records (subject_index) WHERE subject_index IS NOT NULL;
        CREATE TABLE identity_blacklist (
            id            INTEGER PRIMARY KEY,
            subject_index TEXT NOT NULL,
            user_id       TEXT NOT NULL,          -- the account whose subject it was
            case_id       INTEGER,
            actor         TEXT NOT NULL,
            created_at    INTEGER NOT NULL
        );
        CREATE INDEX identity_blacklist_subject ON identity_blacklist (subject_index);
        -- Signed assertions already used (by assertion_id or signature), kept while their
        -- timestamp is still inside the replay window, then pruned.
        CREATE TABLE identity_assertions (
            assertion_key TEXT PRIMARY KEY,
            expires_at    INTEGER NOT NULL
        );
        CREATE INDEX identity_assertions_expiry ON identity_assertions (expires_at);
        """,
    ),
    # --- end identity ------------------------------------------------------------------------------
    # --- identity in chat (issue 9): `!close … --blacklist` ----------------------------------------
    Migration(
        7,
        "closure requests remember whether the confirmed closure blacklists the account's subject",
        """
        ALTER TABLE closure_requests ADD COLUMN blacklist INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    # --- end identity in chat ----------------------------------------------------------------------
    # --- consent at registration (issue 9, bot.consent) ---------------------------------------------
    Migration(
        8,
        "agreement acceptances may be recorded from Synapse's user_consent (method 'registration')",
        """
        -- SQLite cannot change a CHECK constraint: the table is rebuilt, ids and rows kept as they
        -- are (the audit log refers to acceptances by their content, not by rowid, but ids are
        -- exported). No table references it, so the rename needs no foreign-key dance.
        CREATE TABLE agreement_acceptances_new (
            id          INTEGER PRIMARY KEY,
            user_id     TEXT NOT NULL,
            version     TEXT NOT NULL,
            text_sha256 TEXT NOT NULL,
            accepted_at INTEGER NOT NULL,          -- ms since the epoch (registration: Synapse's consent_ts)
            event_id    TEXT NOT NULL UNIQUE,      -- the event; registration: consent:<user>:<version>
            room_id     TEXT NOT NULL,             -- registration: '' (no room)
            method      TEXT NOT NULL CHECK (method IN ('command', 'reaction', 'registration'))
        );
        INSERT INTO agreement_acceptances_new (id, user_id, version, text_sha256, accepted_at, event_id, room_id, method)
            SELECT id, user_id, version, text_sha256, accepted_at, event_id, room_id, method FROM agreement_acceptances;
        DROP TABLE agreement_acceptances;
        ALTER TABLE agreement_acceptances_new RENAME TO agreement_acceptances;
        CREATE INDEX agreement_acceptances_user ON agreement_acceptances (user_id, accepted_at);
        """,
    ),
    # --- end consent at registration ------------------------------------------------------------------
    # --- identity blacklist lifted with its closure (review 9 #12) --------------------------------------
    Migration(
        9,
        "an identity blacklist entry can be lifted (with the closure case that made it), kept as a record",
        """
        ALTER TABLE identity_blacklist ADD COLUMN lifted_at INTEGER;
        ALTER TABLE identity_blacklist ADD COLUMN lifted_by TEXT;
        """,
    ),
    # --- end identity blacklist lifted --------------------------------------------------------------------
    # --- append-only, enforced by the database (issue 11 review, break 10) ----------------------------
    # The code never updates or deletes a row of these tables, except the evidence purge
    # (bot/store/retention.py), which empties a case's evidence and stamps evidence_purged_at: the
    # triggers allow exactly that, so a bug or a hand-typed statement cannot rewrite a record.
    # (Whoever owns the database file or the server can still drop them: the audit chain's hashes
    # and head file are what detect that.) A refusal is an IntegrityError on both backends.
    Migration(
        10,
        "append-only tables refuse UPDATE and DELETE (the evidence purge excepted)",
        """
        CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
        BEGIN
            SELECT RAISE(ABORT, 'audit_log rows are append-only: a row is never deleted');
        END;
        CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
        BEGIN
            SELECT RAISE(ABORT, 'audit_log rows are append-only: a row is never changed');
        END;
        CREATE TRIGGER cases_append_only_delete BEFORE DELETE ON cases
        BEGIN
            SELECT RAISE(ABORT, 'cases rows are append-only: a row is never deleted');
        END;
        CREATE TRIGGER cases_append_only_update BEFORE UPDATE ON cases
        WHEN NOT (NEW.evidence IS NULL AND (NEW.evidence_purged_at IS OLD.evidence_purged_at OR OLD.evidence_purged_at IS NULL)
                  AND NEW.evidence_purged_at IS NOT NULL AND NEW.id IS OLD.id AND NEW.target IS OLD.target AND NEW.kind IS OLD.kind AND NEW.actor IS OLD.actor AND NEW.reason IS OLD.reason AND NEW.created_at IS OLD.created_at AND NEW.expires_at IS OLD.expires_at AND NEW.rate IS OLD.rate AND NEW.options IS OLD.options AND NEW.caused_by IS OLD.caused_by)
        BEGIN
            SELECT RAISE(ABORT, 'cases are append-only: a case is never changed, only its evidence purged (set to NULL)');
        END;
        CREATE TRIGGER case_ends_append_only_delete BEFORE DELETE ON case_ends
        BEGIN
            SELECT RAISE(ABORT, 'case_ends rows are append-only: a row is never deleted');
        END;
        CREATE TRIGGER case_ends_append_only_update BEFORE UPDATE ON case_ends
        BEGIN
            SELECT RAISE(ABORT, 'case_ends rows are append-only: a row is never changed');
        END;
        CREATE TRIGGER agreement_acceptances_append_only_delete BEFORE DELETE ON agreement_acceptances
        BEGIN
            SELECT RAISE(ABORT, 'agreement_acceptances rows are append-only: a row is never deleted');
        END;
        CREATE TRIGGER agreement_acceptances_append_only_update BEFORE UPDATE ON agreement_acceptances
        BEGIN
            SELECT RAISE(ABORT, 'agreement_acceptances rows are append-only: a row is never changed');
        END;
        CREATE TRIGGER identity_records_append_only_delete BEFORE DELETE ON identity_records
        BEGIN
            SELECT RAISE(ABORT, 'identity_records rows are append-only: a row is never deleted');
        END;
        CREATE TRIGGER identity_records_append_only_update BEFORE UPDATE ON identity_records
        BEGIN
            SELECT RAISE(ABORT, 'identity_records rows are append-only: a row is never changed');
        END;
        """,
        postgres="""
        CREATE FUNCTION append_only_refused() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', MESSAGE = TG_ARGV[0];
        END;
        $$;
        CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log FOR EACH ROW
            EXECUTE FUNCTION append_only_refused('audit_log rows are append-only: a row is never deleted');
        CREATE TRIGGER audit_log_append_only_truncate BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT
            EXECUTE FUNCTION append_only_refused('audit_log rows are append-only: a row is never deleted');
        CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log FOR EACH ROW
            EXECUTE FUNCTION append_only_refused('audit_log rows are append-only: a row is never changed');
        CREATE TRIGGER cases_append_only_delete BEFORE DELETE ON cases FOR EACH ROW
            EXECUTE FUNCTION append_only_refused('cases rows are append-only: a row is never deleted');
        CREATE TRIGGER cases_append_only_truncate BEFORE TRUNCATE ON cases FOR EACH STATEMENT
            EXECUTE FUNCTION append_only_refused('cases rows are append-only: a row is never deleted');
        CREATE TRIGGER cases_append_only_update BEFORE UPDATE ON cases FOR EACH ROW
            WHEN (NOT (NEW.evidence IS NULL AND (NEW.evidence_purged_at IS NOT DISTINCT FROM OLD.evidence_purged_at OR OLD.evidence_purged_at IS NULL)
                       AND NEW.evidence_purged_at IS NOT NULL AND NEW.id IS NOT DISTINCT FROM OLD.id AND NEW.target IS NOT DISTINCT FROM OLD.target AND NEW.kind IS NOT DISTINCT FROM OLD.kind AND NEW.actor IS NOT DISTINCT FROM OLD.actor AND NEW.reason IS NOT DISTINCT FROM OLD.reason AND NEW.created_at IS NOT DISTINCT FROM OLD.created_at AND NEW.expires_at IS NOT DISTINCT FROM OLD.expires_at AND NEW.rate IS NOT DISTINCT FROM OLD.rate AND NEW.options IS NOT DISTINCT FROM OLD.options AND NEW.caused_by IS NOT DISTINCT FROM OLD.caused_by))
            EXECUTE FUNCTION append_only_refused('cases are append-only: a case is never changed, only its evidence purged (set to NULL)');
        CREATE TRIGGER case_ends_append_only_delete BEFORE DELETE ON case_ends FOR EACH ROW
            EXECUTE FUNCTION append_only_refused('case_ends rows are append-only: a row is never deleted');
        CREATE TRIGGER case_ends_append_only_truncate BEFORE TRUNCATE ON case_ends FOR EACH STATEMENT
            EXECUTE FUNCTION append_only_refused('case_ends rows are append-only: a row is never deleted');
        CREATE TRIGGER case_ends_append_only_update BEFORE UPDATE ON case_ends FOR EACH ROW
            EXECUTE FUNCTION append_only_refused('case_ends rows are append-only: a row is never changed');
        CREATE TRIGGER agreement_acceptances_append_only_delete BEFORE DELETE ON agreement_acceptances FOR EACH ROW
            EXECUTE FUNCTION append_only_refused('agreement_acceptances rows are append-only: a row is never deleted');
        CREATE TRIGGER agreement_acceptances_append_only_truncate BEFORE TRUNCATE ON agreement_acceptances FOR EACH STATEMENT
            EXECUTE FUNCTION append_only_refused('agreement_acceptances rows are append-only: a row is never deleted');
        CREATE TRIGGER agreement_acceptances_append_only_update BEFORE UPDATE ON agreement_acceptances FOR EACH ROW
            EXECUTE FUNCTION append_only_refused('agreement_acceptances rows are append-only: a row is never changed');
        CREATE TRIGGER identity_records_append_only_delete BEFORE DELETE ON identity_records FOR EACH ROW
            EXECUTE FUNCTION append_only_refused('identity_records rows are append-only: a row is never deleted');
        CREATE TRIGGER identity_records_append_only_truncate BEFORE TRUNCATE ON identity_records FOR EACH STATEMENT
            EXECUTE FUNCTION append_only_refused('identity_records rows are append-only: a row is never deleted');
        CREATE TRIGGER identity_records_append_only_update BEFORE UPDATE ON identity_records FOR EACH ROW
            EXECUTE FUNCTION append_only_refused('identity_records rows are append-only: a row is never changed');
        """,
    ),
    # --- end append-only ---------------------------------------------------------------------------------
    # --- a spent assertion sent again gets its first answer (review 11b, break 2) -----------------------
    Migration(
        11,
        "a used identity assertion keeps its signature and outcome, so the same request sent again gets the same answer",
        """
        ALTER TABLE identity_assertions ADD COLUMN signature TEXT;
        ALTER TABLE identity_assertions ADD COLUMN outcome TEXT;
        """,
    ),
    # --- end spent assertion answered again ---------------------------------------------------------------
)

LATEST_VERSION = MIGRATIONS[-1].version
# The tables migration 10 keeps append-only (tests that forge a tampered record drop its triggers).
APPEND_ONLY_TABLES = ("audit_log", "cases", "case_ends", "agreement_acceptances", "identity_records")
