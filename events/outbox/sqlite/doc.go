// Package sqlite stores the transactional outbox ([outbox.Store]) and the
// inbox ([inbox.Store]) of package events/outbox and events/inbox, and the
// sagas of package mediator/saga ([saga.Store]), in a SQLite database,
// through database/sql and the pure-Go driver modernc.org/sqlite (no cgo).
// It passes the conformance kits outboxtest, inboxtest and sagatest.
//
// # Setup
//
//	db, err := sqlite.Open(ctx, "app.db", sqlite.Options{})          // WAL, BEGIN IMMEDIATE, busy timeout
//	store, err := sqlite.NewStore(db, sqlite.StoreOptions{})         // table cqrs_outbox
//	inbox, err := sqlite.NewInbox(db, sqlite.InboxOptions{})         // table cqrs_inbox
//	sagas, err := sqlite.NewSagaStore(db, sqlite.SagaStoreOptions{}) // tables cqrs_sagas, cqrs_saga_log
//	err = store.EnsureSchema(ctx)                                    // or run SchemaFS with your migration tool
//
// [Open] opens the file with the settings of [DSN]; [New] wraps a pool the
// application opened itself with them. [Store.EnsureSchema],
// [Inbox.EnsureSchema] and [SagaStore.EnsureSchema] create the tables and
// indexes with CREATE … IF NOT EXISTS inside one BEGIN IMMEDIATE
// transaction: processes that start at once on a new file take the write
// lock one after the other, and all but the first find the tables there.
// [SchemaFS] holds the same DDL for a migration tool, [OutboxSchema],
// [InboxSchema] and [SagaSchema] for other table names.
//
// # Transactions
//
// [DB.InTx] is the [outbox.Transactor]: it begins a read-write transaction
// (BEGIN IMMEDIATE), carries it in the context, and commits it when the
// function returns nil; an error, a panic or a context done when the
// function returns roll it back. An InTx inside another of the same DB
// joins it. The application's repositories write with the same *sql.Tx,
// from [DB.Tx] (or outbox.TxFromContext[*sql.Tx]); [Store.Add] and
// [Inbox.Record] write in it too. A transaction the application began
// itself can be handed to the stores with [DB.WithTx].
//
//	err := db.InTx(ctx, func(ctx context.Context) error {
//		tx, _ := db.Tx(ctx)
//		if _, err := tx.ExecContext(ctx, `UPDATE orders SET state = 'paid' WHERE id = ?`, id); err != nil {
//			return err
//		}
//		return store.Add(ctx, env) // same transaction
//	})
//
// SQLite has one writer at a time, and a transaction begun by InTx holds
// the write lock from BEGIN to COMMIT. Other writers wait: those of this
// process in a queue of the DB (they start as soon as the lock is free),
// those of other processes through SQLite's busy timeout
// ([Options.BusyTimeout], 10s by default), after which they fail
// ([ErrBusy] in process, SQLITE_BUSY across processes). Keep transactions
// short. The store methods that write in a transaction of their own
// (Claim, MarkSent, MarkFailed, Release, Requeue, RequeueAllDead,
// DeleteDead, DeleteSent, Purge, EnsureSchema, and the saga store's Claim,
// Renew and Purge) return [ErrInTx] if their context carries an open
// transaction of the same DB, rather than wait for it. Reads (Get, Stats,
// ListDead, Seen, and the saga store's Load, Log and List) never wait for
// writers (WAL) and see committed rows only, whatever the context carries.
//
// # What is atomic
//
//   - Add's rows, the inbox records and the application's writes made in
//     one transaction commit together, or not at all: the rows exist for
//     Claim, Get and Stats only once the transaction commits.
//   - Each Claimer and Admin method is one transaction: it applies to all
//     the rows it reports or to none.
//   - Claim is one UPDATE … RETURNING under the write lock, so no other
//     claim, in any process, runs between its key check and its lease: a
//     row is never leased to two owners at once, and the rows of a key are
//     leased to one owner at a time, in Seq order. A row is claimable when
//     it is due and no earlier unsent row of its key is not: waiting for a
//     retry, leased, or dead.
//   - Seq is the table's INTEGER PRIMARY KEY AUTOINCREMENT, assigned while
//     the inserting transaction holds the write lock: it is exactly the
//     commit order, and never reused, even after every row was deleted.
//
// # Sagas
//
// [SagaStore] is a [saga.Store] in two tables: the sagas, and their step
// logs. Give the orchestrator the DB (or the store) as its Transactor, and
// each step's action runs in a transaction of the DB with its checkpoint:
// the step's writes (with [DB.Tx]), the events a [Store] of the same DB
// adds and the checkpoint commit together, or not at all.
//
//	sagas, err := sqlite.NewSagaStore(db, sqlite.SagaStoreOptions{})
//	o, err := saga.New(saga.Options{Store: sagas, Transactor: db, Mediator: m}, PlaceOrder)
//
// What the store does, as the contract describes it (package saga):
//
//   - Create is one INSERT … ON CONFLICT DO NOTHING; Save one UPDATE …
//     WHERE id = ? AND version = ? and one INSERT per log entry (SQLite has
//     no data-modifying CTE; both run on the transaction's connection, in
//     process). A checkpoint that keeps the saga's status leaves the status
//     out of its UPDATE, so that it writes the saga's row and its log entry
//     and no index page. In the caller's transaction, a savepoint makes
//     the UPDATE and the INSERTs one write: a failure undoes both and
//     leaves the transaction usable.
//   - Claim runs a SELECT of the due sagas, least recently updated first,
//     then one UPDATE … RETURNING of them, in a write transaction: no
//     other claim or write, in any process, runs in between. It reads
//     every active saga (an index holds them), so it costs about as much
//     as there are sagas in flight, not as the table is long.
//   - Renew and Purge each run in a write transaction of their own. The
//     step log is numbered per saga, from 1.
//
// A step run in a transaction holds the write lock of the database for as
// long as it runs: other writers wait for it, the lease renewals of its
// own driver included (they wait up to [Options.BusyTimeout], then retry).
// Keep such steps well under the lease. A saga started inside a
// transaction of the DB ([DB.InTx] around saga.Execute) runs every step in
// that transaction, and its driver cannot renew its lease ([ErrInTx]):
// start sagas outside one.
//
// Two orchestrators in different processes may recover the sagas of one
// file at once: each claim is a write transaction, so a saga is claimed by
// one of them only (the package's tests kill a driving process with
// SIGKILL mid-step and recover its saga from another, completing it or
// compensating it, each step's effect applied once).
//
// # Several processes on one file
//
// Any number of processes (application instances, relays) may open one
// database file, on one host: SQLite's WAL mode needs shared memory, so the
// file must not be on a network file system. Their writes take turns; their
// reads run alongside. Relays in different processes need distinct owners
// (the relay's default is unique).
//
// [Store.Watch] is an in-process [outbox.Notifier]: it wakes the relays of
// this process right after a commit (by InTx) that added rows, and after
// Release, Requeue, RequeueAllDead and DeleteDead. Commits of other
// processes, and of transactions given to WithTx, are not signalled: the
// relays find those rows at their next poll ([outbox.RelayConfig]
// PollInterval).
//
// # Durability
//
// With the default synchronous=FULL, a transaction that committed survives
// a crash of the process and a loss of power. [Options.Synchronous]
// "NORMAL" makes commits cheaper: they still survive a crash of the
// process, but the last ones may be lost with the power. A process killed
// in the middle of a transaction leaves nothing of it: SQLite rolls it back
// when the file is next opened. A relay killed between its send and its
// marks leaves its rows leased to it; another relay claims them once the
// lease expires and sends them again (at least once; see the crash test of
// this package). An inbox in the consumer's transaction drops those
// duplicates.
//
// # Schema and encodings
//
// The tables are STRICT (SQLite 3.37 or later; the driver bundles a recent
// SQLite). Event IDs are canonical UUID text. Times read from the store's
// clock (AddedAt, NextAttemptAt, LeaseUntil, SentAt, inbox records) are
// INTEGER microseconds since the Unix epoch, so rows return them truncated
// to the microsecond. The envelope is kept exactly: its Timestamp as RFC
// 3339 text with nanoseconds (it must be zero or within the years 0 to
// 9999), its headers as a JSON object (a nil map stays nil, an empty one
// empty; invalid UTF-8 in a header becomes U+FFFD, as encoding/json
// writes it), its payload as a BLOB. Table names are validated
// identifiers; indexes are named after their table. The files of [SchemaFS]
// document every column.
//
// # Not supported, not guaranteed
//
//   - In-memory databases: every connection of a pool would open its own.
//     Use a file (in a temporary directory for tests).
//   - Wake-ups across processes: they poll.
//   - Exactly-once delivery, and everything else package outbox does not
//     promise.
//   - Sharing one pool between two DB values: the write queue is the DB's;
//     create one DB per pool, and give [New] a pool of at least two
//     connections if it is read during transactions.
package sqlite
