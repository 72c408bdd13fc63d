// Package postgres keeps the transactional outbox (events/outbox), the
// inbox (events/inbox) and the sagas (mediator/saga) of
// github.com/gocqrs/cqrs in PostgreSQL (13 or later), on
// github.com/jackc/pgx/v5: a pgx pool, or database/sql with pgx's driver.
// Its [Store] passes the outbox conformance kit, its [Inbox] the inbox kit
// and its [SagaStore] the saga kit, over both.
//
//	db, err := postgres.New(pool, postgres.Options{}) // or postgres.NewSQL(sqlDB, …)
//	store, err := postgres.NewStore(db, postgres.StoreOptions{})
//	err = store.EnsureSchema(ctx) // or feed postgres.SchemaFS() to a migration tool
//
//	err = db.InTx(ctx, func(ctx context.Context) error {
//		tx, _ := postgres.PgxTx(ctx) // the repositories' transaction
//		if _, err := tx.Exec(ctx, "UPDATE orders SET state = 'paid' WHERE id = $1", id); err != nil {
//			return err
//		}
//		return store.Add(ctx, env) // same transaction
//	})
//
//	relay, err := outbox.NewRelay(store, sender, outbox.DefaultRelayConfig())
//	go relay.Run(ctx) // as many relays, in as many processes, as you like
//
// # Transactions
//
// A [DB] wraps the pool the application already has, and is its
// outbox.Transactor: [DB.InTx] begins a transaction (READ COMMITTED), runs
// a function with a context carrying it, and commits if the function
// returns nil; it rolls back on an error, a panic (re-raised) or a context
// done before the commit. An InTx inside another one on the same pool
// joins it and the outermost decides; one on another pool begins a
// transaction of its own, which the inner context carries. The
// transaction is a pgx.Tx ([New]) or a *sql.Tx ([NewSQL]); repositories
// get it with [PgxTx] or [SQLTx] (or outbox.TxFromContext of the type).
// [WithPgxTx] and [WithSQLTx] carry a transaction the application began
// and ends itself.
//
// [Store.Add] and [Inbox.Record] write in whichever transaction the
// context carries, of either kind, whatever kind of DB their store was
// built on: a store on a pgx pool can add rows in a database/sql
// transaction. Without a transaction they fail with outbox.ErrNoTx and
// write nothing; after the transaction ended, with outbox.ErrTxDone. They
// serialise their statements on the transaction, so the mediator may add
// events from several goroutines at once; a pgx.Tx is one connection, so
// an application that also writes with it from several goroutines holds
// [TxLock] around its own statements.
//
// # Atomicity
//
// Add is one INSERT … ON CONFLICT (event_id) DO NOTHING in the
// application's transaction: the rows exist if and only if that
// transaction commits, and an event ID already in the table is skipped.
// Every other Store method runs one statement on the pool, outside any
// transaction, and commits on its own.
//
// # Claims, leases and order, with several relays
//
// [Store.Claim] is one statement, one round trip: an UPDATE of the rows
// selected with FOR UPDATE SKIP LOCKED, setting their lease (owner and
// expiry), returning them in Seq order. Relays in any number of processes
// may claim at once: a row locked by another claim is skipped, and a row
// another claim leased since this one began is re-checked when it is
// locked and dropped; a claim never returns a row under another owner's
// unexpired lease. SKIP LOCKED alone would break per-key order (a claim
// could skip the locked first row of a key and take the second), so the
// statement keeps a row of a non-empty key only if every earlier unsent
// row of that key is locked by the same statement and is due and
// unleased: a skipped, leased, waiting or dead row holds back the rest of
// its key, exactly as the outbox contract says. Concurrent claims
// therefore never take rows of one key, and rows of other keys flow past
// a blocked key.
//
// A lease expires at the time the claiming store's clock gave it; after
// that, any claim may take the rows over (that is how the rows of a relay
// that died are delivered, at most a lease plus a poll interval later).
// MarkSent, MarkFailed and Release apply only to rows whose lease owner is
// the caller, and report the others in a *outbox.LeaseError.
//
// Time comes only from the outbox.Clock of each store, passed to every
// statement as a parameter, never from the server's now(). Processes on
// several hosts compare each other's lease times: keep their clocks
// synchronised (NTP) to well within the lease.
//
// # LISTEN/NOTIFY
//
// Add's statement also sends a NOTIFY on the store's channel
// ([StoreOptions.Channel]) if it added a row; PostgreSQL delivers it when
// the transaction commits, and not at all if it rolls back. Release,
// Requeue, RequeueAllDead and DeleteDead notify too. [Store.Watch]
// implements outbox.Notifier: on a connection of its own it LISTENs and
// wakes the relay within milliseconds of a commit, in any process. If the
// connection is lost, Watch returns an error: the relay falls back to its
// poll interval and watches again with backoff. Notifications sent while
// no connection listened are lost, and an expired lease sends none:
// polling finds those rows, so keep a poll interval. A commit that sends a
// NOTIFY takes a cluster-wide lock while it queues it; [StoreOptions.NoNotify]
// turns the NOTIFY off when relays may wait for their poll.
//
// # Inbox
//
// [Inbox.Record] is INSERT … ON CONFLICT DO NOTHING on the primary key
// (consumer, event_id) in the context's transaction. A Record that meets
// the record of another open transaction waits for it: a duplicate if it
// commits, a first record if it rolls back. The transaction must be READ
// COMMITTED (under REPEATABLE READ or SERIALIZABLE such a Record fails
// with a serialization error instead).
//
// # Sagas
//
// [SagaStore] implements saga.Store in two tables, the sagas and their
// step log ([SagaStoreOptions]), and is the outbox.Transactor of its DB:
//
//	sagas, err := postgres.NewSagaStore(db, postgres.SagaStoreOptions{})
//	err = sagas.EnsureSchema(ctx)
//	o, err := saga.New(saga.Options{Store: sagas, Transactor: sagas, Mediator: m}, PlaceOrder)
//
// With the store as the orchestrator's Transactor, each step's action and
// its checkpoint run in one transaction of [DB.InTx]: what the step writes
// with [PgxTx] or [SQLTx], the outbox rows its requests add, and the
// checkpoint commit together or not at all. Create and Save write in
// whichever transaction the context carries, of either kind, as Add does
// (give the orchestrator the Transactor of the store's database); without
// one, each commits on its own. Every other method runs one statement on
// the pool; Load and Log read what is committed.
//
// Every method is one statement, one round trip. Save is an UPDATE of the
// saga where its version is the checkpoint's, with version + 1, and the
// INSERT of the log entries fed by the UPDATE's result, in one statement
// (a data-modifying CTE) that also tells a version conflict
// (*saga.ConflictError) from a missing saga (saga.ErrNotFound) when
// nothing was updated. A Save that meets a saga another open transaction
// has written waits for that transaction and gets the conflict if it
// commits: two drivers never both move a saga on. [SagaStore.Claim] is an
// UPDATE of the due sagas (active, lease released or expired), least
// recently updated first, selected with FOR UPDATE SKIP LOCKED: concurrent
// recoverers never take the same saga, and a saga an open transaction
// holds (a step committing its checkpoint) is skipped. Renew extends a
// lease without changing the version. Purge deletes the sagas that ended
// well with their logs, in one statement.
//
// As for the outbox, time comes only from the store's clock, passed as a
// parameter; leases compare times of several processes' clocks. The
// log's Seq is drawn at insert, under the saga's row lock, so a saga's
// entries are numbered in append order. Text (saga and step names,
// owners) must be valid UTF-8 without NUL bytes, or the method returns an
// error matching saga.ErrInvalidArgument; such bytes are replaced in the
// errors the log keeps.
//
// # Schema
//
// [SchemaFS] holds the DDL (schema/outbox.sql, schema/inbox.sql,
// schema/saga.sql) with the default names; [OutboxSchema], [InboxSchema]
// and [SagaSchema] render it for other names, which may be
// schema-qualified and are quoted. [Store.EnsureSchema],
// [Inbox.EnsureSchema] and [SagaStore.EnsureSchema] run it under a
// transaction-level advisory lock, so processes starting at once create
// each table once. Event IDs are native uuid columns, headers jsonb,
// timestamps timestamptz (kept to the microsecond). Text must be valid
// UTF-8 without NUL bytes: Add refuses other envelopes with
// outbox.ErrInvalidEnvelope, and MarkFailed replaces such bytes in the
// error text it stores. Partial indexes keep the claim on the unsent rows:
// the pending rows in Seq order, and the unsent rows of each key. On the
// saga table, partial indexes keep the active sagas in update order (for
// claims) and the sagas that ended well in update order (for purges).
//
// The claim's plan relies on the table's statistics, which autovacuum
// keeps as rows come and go; a table whose statistics say it is nearly
// empty while thousands of rows wait may be claimed with a plan that reads
// every pending row, until it is analyzed again. [Store.Stats] scans the
// table: call it at a monitoring pace.
//
// # Not guaranteed
//
//   - Seq is drawn when a row is inserted, so two transactions adding
//     rows of one key concurrently may commit in the opposite order of
//     their Seq, and a row whose Seq is lower than a row already claimed
//     may appear later. Serialise the writes of one key (a row lock or a
//     version check on the aggregate), which per-key order needs anyway.
//   - Exactly-once delivery: a relay that dies, or outlives its lease,
//     delivers again what it had sent and not marked.
//   - That Add writes to the database of its store: it writes in the
//     transaction the context carries, of whichever database.
//   - A wake-up for every commit: see LISTEN/NOTIFY above.
package postgres
