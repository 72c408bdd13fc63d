// Package outbox is a transactional outbox: notification events are written
// to a table in the same database transaction as the changes they describe,
// and a [Relay] then moves the committed rows to a [Sender] (a broker
// producer, or an in-process consumer). An event leaves if and only if its
// transaction committed, and it leaves at least once, even if the broker is
// down when the transaction commits or a relay crashes.
//
// This package holds the database-independent part: the [Store] contract,
// an in-memory [MemoryStore], the [Relay], the [Sender] contract and an
// [InProcessSender]. SQL stores live in modules of their own and are held to
// the contract by the conformance kit, package outboxtest. Package
// events/inbox is the consumer side: it drops redelivered events.
//
// # Writing: transactions travel in the context
//
// A database's [Transactor] opens a transaction and passes it down in the
// context; [Adder.Add] writes in that transaction, and so do the
// application's repositories, which read it back with [TxFromContext] (or
// the store's own helper). A command handler therefore writes like this:
//
//	err := db.InTx(ctx, func(ctx context.Context) error {
//		if err := orders.Save(ctx, order); err != nil { // uses the tx in ctx
//			return err
//		}
//		return store.Add(ctx, env) // same tx
//	})
//
// The rows exist only once the transaction commits; a rollback, an error or
// a panic in the function, or a context done before the commit leaves none.
// Add without a transaction in the context fails with [ErrNoTx]: the outbox
// never commits on its own, so an event cannot escape without the writes
// it describes. An InTx inside another joins it; the outermost decides.
//
// The memory stores implement the same mechanism with [MemoryTransactor]:
// writes are staged in a [MemoryTx] and applied on commit, so the rollback
// properties hold, and are tested, for every store.
//
// # Rows
//
// A [Row] is an envelope plus its delivery state: a commit-order sequence
// number Seq; a [State] (Pending, Sent or Dead); Attempts and LastError; the
// NextAttemptAt before which it is not claimed; and a lease (LeaseOwner,
// LeaseUntil) while a relay sends it. Stores read the time only from the
// [Clock] they are given, never from a database server, so that every
// store's time can be controlled in tests.
//
// # Order
//
// Rows are claimed in Seq order, and the rows of one partition key (the
// envelope's Key) strictly one after the other: a row is claimed only when
// every earlier row of its key is sent (or is claimed with it, earlier in
// the same batch). So an earlier row of the key that is waiting for its
// next attempt, is leased by any relay, or is dead holds the later rows
// back. A dead row holds its key until an operator requeues it
// ([Admin.Requeue]) or deletes it ([Admin.DeleteDead]): later events of that
// key are not sent past a lost one. A failing row holds back only its own
// key; rows of other keys keep flowing. Rows with an empty Key have no
// order constraint at all.
//
// A [Sender] receives a batch in Seq order, must deliver the records of a
// key in that order, and must not deliver a record after an earlier record
// of its key failed. When a record fails, the relay records the failure on
// it and releases the later records of its key in the batch, unsent and
// without counting an attempt.
//
// Seq is the store's commit order: exactly so for the memory store and
// SQLite (whose writers are serialised). PostgreSQL assigns it when the row
// is inserted, so two concurrent transactions writing the same key may
// commit in the opposite order of their Seq; applications that need per-key
// order serialise writes per key anyway (a row lock or a version check on
// the aggregate the key names), which makes the orders agree.
//
// # Claims and leases
//
// [Claimer.Claim] leases due rows to an owner for a duration. Until
// LeaseUntil, no other claim returns them; from LeaseUntil on, they may be
// claimed by anyone: that is how the rows of a relay that died are taken
// over, with no attempt counted. Only the owner may mark its rows
// ([Claimer.MarkSent], [Claimer.MarkFailed], [Claimer.Release]); a mark by an
// owner whose rows were taken over is refused with a *[LeaseError] (matching
// [ErrLeaseLost]) and changes nothing. A mark by an owner whose lease
// expired but that nobody claimed since is accepted. Owners running at the
// same time must have distinct names. Leases compare the clocks of the
// processes that claim (SQL stores never use the database server's clock):
// relays on several hosts need their clocks in sync to well within the
// lease; a host whose clock runs ahead takes rows over early, which can
// only cause duplicates, never a loss.
//
// # The relay
//
// [Relay.Run] loops until its context is done: claim a batch
// ([RelayConfig.BatchSize]) with a lease, send it, then for each row mark it
// sent (only once the sender has acknowledged it), record its failure (the
// row is retried after an exponential backoff with jitter, or is dead after
// [RelayConfig.MaxAttempts] failures, or at once for an error matching
// [ErrPermanent]), or release it. After a batch it claims again at once;
// when nothing is due it waits to be woken:
//
//   - by the store's [Notifier] (or [RelayConfig.Notifier]) after a commit:
//     the memory store signals in process; PostgreSQL can use
//     LISTEN/NOTIFY. The relay is then woken within the time it takes to
//     schedule a goroutine;
//   - when a row whose failure it recorded becomes due;
//   - by the poll interval ([RelayConfig.PollInterval]), the fallback that
//     finds rows of relays that died, and everything when the store has no
//     notifier or its notifier is down.
//
// It also deletes sent rows older than [RelayConfig.RetainSent]. Store
// failures are logged (log/slog), counted and retried with backoff; they
// never stop Run. [Relay.Counters] and [Relay.Stats] report what the relay
// did and the store's state (pending, leased, sent and dead rows, and the
// lag: the age of the oldest pending row). Several relays, in one process
// or many, may run on one store: leases keep them off each other's rows.
//
// # When calls return, and cancellation
//
// Add returns once the rows are written in the transaction (staged, for
// the memory store); the caller's commit makes them visible. Claim never
// waits for rows to become due: it returns what is due now, possibly
// nothing. Every store method honours its context. Send returns when the transport has
// acknowledged or failed, or promptly once its context is done; one Send is
// bounded by [RelayConfig.SendTimeout], which is shorter than the lease.
//
// Run returns nil once its context is done, after finishing the batch in
// flight: Send sees the context done; the rows it acknowledged are marked
// sent and the others are released, through a context that is not
// cancelled and is bounded by [RelayConfig.FinishTimeout]. A row is never
// marked sent unless the sender acknowledged it, and a failure caused by
// the cancellation is not counted as an attempt. Run's only goroutine (the
// notifier's) has ended when Run returns.
//
// # Errors
//
// Sentinels, matched with errors.Is: [ErrNoTx], [ErrTxDone],
// [ErrInvalidEnvelope], [ErrInvalidArgument], [ErrLeaseLost] (a
// *[LeaseError] lists the rows), [ErrNotFound], [ErrInvalidConfig] (every
// problem at once, through errors.Join), [ErrRelayRunning],
// [ErrNotAttempted] and [ErrPermanent] (a *[PermanentError] wraps the
// cause). A [Sender] reports per-record outcomes with a *[BatchError]. A
// panic in a sender or a delivery function is recovered as a *[PanicError].
//
// # Crashes
//
//   - The application dies before its commit: no row, no event.
//   - A relay dies before its marks: its rows are claimed again once their
//     lease expires, and sent again (at most a lease later, plus a poll).
//     This is the at-least-once case: the events may be delivered twice.
//   - A mark fails (database down): the same, after the lease expires.
//   - The broker is down: sends fail, rows wait with growing backoff, and
//     become dead after MaxAttempts failures; requeue them once the broker
//     is back ([Admin.RequeueAllDead]). Give MaxAttempts and the backoff
//     room for the outages you expect.
//
// # Guarantees across processes
//
//   - At-least-once: every committed row is delivered, or becomes dead
//     and stays in the table, visible to operators; nothing is dropped
//     silently.
//   - Per-key order: the first delivery of each event of a key happens
//     after the first delivery of every earlier event of that key. A
//     redelivery (after a crash or a lease takeover) may repeat events
//     already delivered.
//   - With the inbox (package events/inbox) on the consumer side, written in
//     the consumer's own transaction, each event's database effects are
//     applied once per consumer.
//
// Not guaranteed:
//
//   - Exactly-once delivery: consumers must drop duplicates (the inbox
//     does), and brokers may add their own.
//   - Any order across keys, or among rows with an empty key.
//   - The order of the transport after Send: a broker keeps per-key order
//     only if it partitions by the key (Kafka does with the record key).
//   - Progress for a row whose send crashes the relay process itself: the
//     crash records no attempt, so the row is retried forever. Watch the
//     lag.
//   - Durability of the memory store: it is lost with its process.
//
// # Implementing a store
//
// Run outboxtest.Run against the store. Notes for SQL:
//
//   - Add: one INSERT per envelope (or one multi-row INSERT) with
//     ON CONFLICT (event id) DO NOTHING; next_attempt_at = added_at =
//     clock now. Calls with one transaction may come from several
//     goroutines: serialise them if the driver's transaction is not safe
//     for concurrent use.
//   - Claim: make the key check and the lease update atomic with respect
//     to other claims. PostgreSQL: serialise claims with
//     pg_advisory_xact_lock (claims are short) or lock each key's head
//     row, then UPDATE … SET lease_owner, lease_until … RETURNING in Seq
//     order; SELECT … FOR UPDATE SKIP LOCKED alone is not enough, since a
//     claimer could skip a locked earlier row of a key and take a later one.
//     SQLite: BEGIN IMMEDIATE and UPDATE … RETURNING.
//   - Marks: UPDATE … WHERE id IN (…) AND state = pending AND lease_owner =
//     $owner RETURNING id; the ids not returned make the *LeaseError.
//   - Notifier: PostgreSQL LISTEN/NOTIFY (a trigger on insert, or NOTIFY
//     in Add), run by the relay through [Notifier.Watch].
//
// # Publishing from the mediator
//
// A mediator's Publisher that captures a handler's notification events
// encodes each one and adds it to the store, with the handler's context
// (which carries the transaction):
//
//	publish := events.PublisherFunc(func(ctx context.Context, ev events.NotificationEvent) error {
//		env, err := encoder.Encode(ev)
//		if err != nil {
//			return err
//		}
//		return store.Add(ctx, env)
//	})
package outbox
