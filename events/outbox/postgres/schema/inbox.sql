-- Transactional inbox of github.com/gocqrs/cqrs, module
-- github.com/gocqrs/cqrs/events/outbox/postgres (PostgreSQL 13 or later).
-- Inbox.Record inserts a row per (consumer, event) in the consumer's
-- transaction; a row that is already there marks a redelivery. Every
-- identifier derived from the table name is double-quoted, so that
-- InboxSchema can rename them. The statements are idempotent.
CREATE TABLE IF NOT EXISTS "cqrs_inbox" (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    recorded_at timestamptz NOT NULL,
    CONSTRAINT "cqrs_inbox_pkey" PRIMARY KEY (consumer, event_id)
);

-- Purge: the oldest records first.
CREATE INDEX IF NOT EXISTS "cqrs_inbox_recorded_idx"
    ON "cqrs_inbox" (recorded_at);
