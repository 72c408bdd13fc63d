-- Saga store tables of github.com/gocqrs/cqrs/events/outbox/sqlite, for
-- package mediator/saga (schema version 1): the sagas, and their step log.
-- Requires SQLite 3.37 or later (STRICT tables).
--
-- The table and index names below are the defaults. Every identifier that
-- carries a table name is double-quoted and starts with it, so
-- SagaSchema(table, logTable) derives the DDL for other names by replacing
-- those prefixes. The statements are idempotent (IF NOT EXISTS).
--
-- Encodings:
--   id, saga_id     canonical UUID text, lower case (36 characters); it
--                   sorts as the UUID's bytes, so List pages in ID order
--   status          1 running, 2 compensating, 3 completed, 4 compensated,
--                   5 failed, 6 halted (saga.Status)
--   state           the saga's state as its definition's codec encoded it
--                   (an empty BLOB for none)
--   lease_owner     NULL when the saga is not leased (and lease_until too)
--   phase           1 forward, 2 compensation (saga.Phase)
--   fallback        0 or 1
--   outcome         1 succeeded, 2 failed, 3 interrupted, 4 halted
--                   (saga.Outcome)
--   errors          JSON array of strings, oldest first; NULL for none
--   *_at, *_until   INTEGER microseconds since 1970-01-01 UTC: read from
--                   the store's clock for the sagas (lease_until is NULL
--                   when not leased), from the orchestrator's for the
--                   entries' started_at and finished_at
CREATE TABLE IF NOT EXISTS "cqrs_sagas" (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    status      INTEGER NOT NULL CHECK (status BETWEEN 1 AND 6),
    step        INTEGER NOT NULL CHECK (step >= 0),
    state       BLOB    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    attempts    INTEGER NOT NULL CHECK (attempts >= 0),
    lease_owner TEXT,
    lease_until INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
) STRICT;

-- Claim: the active sagas, by name. It holds nothing a checkpoint changes
-- while the saga stays active (the store leaves status out of the update
-- when it does not change), so that a step's checkpoint writes no page of
-- it; a claim reads the lease and the order from the table.
CREATE INDEX IF NOT EXISTS "cqrs_sagas_active"
    ON "cqrs_sagas" (name)
    WHERE status IN (1, 2);

-- Purge: the sagas that ended well, least recently updated first.
CREATE INDEX IF NOT EXISTS "cqrs_sagas_ended"
    ON "cqrs_sagas" (updated_at, id, status)
    WHERE status IN (3, 4);

-- The step log, clustered by saga: seq numbers the entries of a saga from
-- 1, in append order, so that a saga's log is read from adjacent pages and
-- an entry is one B-tree insert.
CREATE TABLE IF NOT EXISTS "cqrs_saga_log" (
    saga_id     TEXT    NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    step        TEXT    NOT NULL,
    idx         INTEGER NOT NULL,
    phase       INTEGER NOT NULL CHECK (phase IN (1, 2)),
    fallback    INTEGER NOT NULL CHECK (fallback IN (0, 1)),
    outcome     INTEGER NOT NULL CHECK (outcome BETWEEN 1 AND 4),
    attempts    INTEGER NOT NULL,
    errors      TEXT,
    owner       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (saga_id, seq)
) STRICT, WITHOUT ROWID;
