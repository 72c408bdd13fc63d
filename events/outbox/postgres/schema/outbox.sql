-- Transactional outbox of github.com/gocqrs/cqrs, module
-- github.com/gocqrs/cqrs/events/outbox/postgres (PostgreSQL 13 or later).
-- Store.Add writes rows in the application's transactions; outbox.Relay
-- claims them, sends them and marks them. Every identifier derived from the
-- table name is double-quoted, so that OutboxSchema can rename them. The
-- statements are idempotent.
CREATE TABLE IF NOT EXISTS "cqrs_outbox" (
    -- Commit order, assigned at insert: per-key order is seq order. It is
    -- indexed only by the partial indexes below, so that the planner walks
    -- the per-key index, not every row ever sent, to find a key's rows.
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    -- The envelope (events/wire.Envelope).
    event_id        uuid        NOT NULL,
    name            text        NOT NULL,
    topic           text        NOT NULL,
    partition_key   text        NOT NULL,
    event_time      timestamptz,          -- NULL for a zero Timestamp
    correlation_id  text        NOT NULL,
    causation_id    text        NOT NULL,
    content_type    text        NOT NULL,
    headers         jsonb,                -- an object of strings; NULL when empty
    payload         bytea,
    -- Delivery state (outbox.Row); state is 1 pending, 2 sent, 3 dead.
    state           smallint    NOT NULL DEFAULT 1,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    added_at        timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    lease_owner     text,
    lease_until     timestamptz,
    sent_at         timestamptz,
    CONSTRAINT "cqrs_outbox_pkey" PRIMARY KEY (event_id),
    CONSTRAINT "cqrs_outbox_state_check" CHECK (state IN (1, 2, 3))
);

-- Claim: the pending rows in seq order.
CREATE INDEX IF NOT EXISTS "cqrs_outbox_pending_idx"
    ON "cqrs_outbox" (seq) WHERE state = 1;

-- Claim: the unsent rows of a key before a given row (per-key order).
CREATE INDEX IF NOT EXISTS "cqrs_outbox_key_idx"
    ON "cqrs_outbox" (partition_key, seq) WHERE state IN (1, 3) AND partition_key <> '';

-- ListDead and RequeueAllDead.
CREATE INDEX IF NOT EXISTS "cqrs_outbox_dead_idx"
    ON "cqrs_outbox" (seq) WHERE state = 3;

-- DeleteSent (retention of sent rows).
CREATE INDEX IF NOT EXISTS "cqrs_outbox_sent_idx"
    ON "cqrs_outbox" (sent_at) WHERE state = 2;
