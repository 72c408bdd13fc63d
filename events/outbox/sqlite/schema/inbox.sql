-- Transactional inbox table of github.com/gocqrs/cqrs/events/outbox/sqlite
-- (schema version 1). Requires SQLite 3.37 or later (STRICT tables).
--
-- The table and index names below are the defaults. Every identifier that
-- carries the table name is double-quoted and starts with the table name,
-- so InboxSchema(table) derives the DDL for another name by replacing that
-- prefix. The statements are idempotent (IF NOT EXISTS).
--
-- Encodings:
--   event_id      canonical UUID text, lower case (36 characters)
--   recorded_at   INTEGER microseconds since 1970-01-01 UTC, read from the
--                 store's clock
CREATE TABLE IF NOT EXISTS "cqrs_inbox" (
    consumer    TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
) STRICT, WITHOUT ROWID;

-- Purge: records oldest first.
CREATE INDEX IF NOT EXISTS "cqrs_inbox_recorded_at"
    ON "cqrs_inbox" (recorded_at);
