-- Saga store of github.com/gocqrs/cqrs (package mediator/saga), module
-- github.com/gocqrs/cqrs/events/outbox/postgres (PostgreSQL 13 or later):
-- the sagas, and their step log. SagaStore.Create inserts a saga;
-- SagaStore.Save updates it (checking its version) and appends its log
-- entries in one statement; SagaStore.Claim leases the sagas a recoverer
-- takes over. Every identifier derived from a table name is double-quoted,
-- so that SagaSchema can rename them. The statements are idempotent.
--
-- Encodings: status 1 running, 2 compensating, 3 completed, 4 compensated,
-- 5 failed, 6 halted (saga.Status); phase 1 forward, 2 compensation
-- (saga.Phase); outcome 1 succeeded, 2 failed, 3 interrupted, 4 halted
-- (saga.Outcome). Times are read from the store's clock (the entries'
-- started_at and finished_at from the orchestrator's), never from the
-- server.
CREATE TABLE IF NOT EXISTS "cqrs_sagas" (
    id          uuid        NOT NULL,
    name        text        NOT NULL, -- the saga's definition
    status      smallint    NOT NULL,
    step        integer     NOT NULL, -- the cursor (saga.Record.Step)
    state       bytea       NOT NULL, -- encoded by the definition's codec
    version     bigint      NOT NULL, -- 1 at creation, +1 per Save and Claim
    attempts    integer     NOT NULL, -- recovery claims since the last progress
    lease_owner text,                 -- NULL when not leased
    lease_until timestamptz,          -- NULL when not leased
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT "cqrs_sagas_pkey" PRIMARY KEY (id),
    CONSTRAINT "cqrs_sagas_status_check" CHECK (status BETWEEN 1 AND 6),
    CONSTRAINT "cqrs_sagas_counts_check" CHECK (step >= 0 AND version >= 1 AND attempts >= 0),
    CONSTRAINT "cqrs_sagas_lease_check" CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- Claim: the active sagas, least recently updated first.
CREATE INDEX IF NOT EXISTS "cqrs_sagas_active_idx"
    ON "cqrs_sagas" (updated_at, id) WHERE status IN (1, 2);

-- Purge: the sagas that ended well, least recently updated first.
CREATE INDEX IF NOT EXISTS "cqrs_sagas_ended_idx"
    ON "cqrs_sagas" (updated_at) WHERE status IN (3, 4);

-- The step log. seq orders the entries (drawn at insert; a saga's entries
-- are written one checkpoint after the other, under its row lock, so they
-- are numbered in append order); the primary key keeps a saga's entries
-- together for Log and Purge. There is no foreign key to the sagas (it
-- would cost every checkpoint a lookup): entries are inserted only by the
-- statement that updates their saga, and Purge deletes them with it.
CREATE TABLE IF NOT EXISTS "cqrs_saga_log" (
    saga_id     uuid        NOT NULL,
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    step        text        NOT NULL,
    idx         integer     NOT NULL,
    phase       smallint    NOT NULL,
    fallback    boolean     NOT NULL,
    outcome     smallint    NOT NULL,
    attempts    integer     NOT NULL,
    errors      jsonb,                -- an array of strings, oldest first; NULL for none
    owner       text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    CONSTRAINT "cqrs_saga_log_pkey" PRIMARY KEY (saga_id, seq),
    CONSTRAINT "cqrs_saga_log_phase_check" CHECK (phase IN (1, 2)),
    CONSTRAINT "cqrs_saga_log_outcome_check" CHECK (outcome BETWEEN 1 AND 4)
);
