-- Transactional outbox table of github.com/gocqrs/cqrs/events/outbox/sqlite
-- (schema version 1). Requires SQLite 3.37 or later (STRICT tables).
--
-- The table and index names below are the defaults. Every identifier that
-- carries the table name is double-quoted and starts with the table name,
-- so OutboxSchema(table) derives the DDL for another name by replacing that
-- prefix. The statements are idempotent (IF NOT EXISTS).
--
-- Encodings:
--   event_id          canonical UUID text, lower case (36 characters)
--   event_time        RFC 3339 text in UTC with up to nanoseconds; NULL when
--                     the envelope has no timestamp
--   headers           JSON object text; NULL when the envelope has none
--   payload           the encoded body; NULL when the envelope has none
--   state             1 pending, 2 sent, 3 dead (outbox.State)
--   *_at, *_until     INTEGER microseconds since 1970-01-01 UTC, read from
--                     the store's clock; lease_owner, lease_until and
--                     sent_at are NULL when not set
CREATE TABLE IF NOT EXISTS "cqrs_outbox" (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    partition_key   TEXT    NOT NULL,
    event_time      TEXT,
    correlation_id  TEXT    NOT NULL,
    causation_id    TEXT    NOT NULL,
    content_type    TEXT    NOT NULL,
    headers         TEXT,
    payload         BLOB,
    state           INTEGER NOT NULL DEFAULT 1 CHECK (state IN (1, 2, 3)),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    added_at        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    sent_at         INTEGER
) STRICT;

-- Claim: pending rows in Seq order, with everything that decides whether a
-- row is due (Stats reads the oldest added_at from it too).
CREATE INDEX IF NOT EXISTS "cqrs_outbox_pending"
    ON "cqrs_outbox" (seq, partition_key, next_attempt_at, lease_until, added_at)
    WHERE state = 1;

-- Claim: the unsent rows of each non-empty key, in Seq order: the rows
-- that may hold a later row of the same key back.
CREATE INDEX IF NOT EXISTS "cqrs_outbox_key"
    ON "cqrs_outbox" (partition_key, seq, state, next_attempt_at, lease_until)
    WHERE state <> 2 AND partition_key <> '';

-- Retention (DeleteSent) and Stats: sent rows by the time they were sent.
CREATE INDEX IF NOT EXISTS "cqrs_outbox_sent"
    ON "cqrs_outbox" (sent_at)
    WHERE state = 2;

-- ListDead, RequeueAllDead and Stats: dead rows in Seq order.
CREATE INDEX IF NOT EXISTS "cqrs_outbox_dead"
    ON "cqrs_outbox" (seq)
    WHERE state = 3;
