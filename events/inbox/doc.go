// Package inbox drops redelivered events on the consumer side: the
// transactional inbox. Outboxes and brokers deliver at least once, so a
// consumer may receive an event twice (after a relay or a consumer crashed,
// or a broker redelivered). An inbox [Store] remembers, per consumer, the
// IDs of the events it has processed, and is written in the consumer's own
// database transaction, together with the effects of the event: either
// both commit or neither does. A redelivered event finds its record and
// its effects are not applied again.
//
// # Use
//
// [Deduplicator] does it in one call:
//
//	d := inbox.Deduplicator{Consumer: "billing", Store: inboxStore, Transactor: db}
//	duplicate, err := d.Process(ctx, env.ID, func(ctx context.Context) error {
//		ev, err := decoder.Decode(env)
//		if err != nil {
//			return err
//		}
//		return eventMediator.Send(ctx, ev) // handlers write with the tx in ctx
//	})
//	// err == nil: acknowledge the message (duplicate or not).
//	// err != nil: nothing was committed; let the transport redeliver.
//
// The transaction is the one of package outbox's mechanism ([outbox.Transactor]
// puts it in the context), so the handlers' writes, the notification events
// they emit into an outbox of the same database, and the inbox record all
// commit together.
//
// # Contract
//
//   - [Store.Record] writes in the transaction carried by the context
//     (outbox.ErrNoTx without one) and reports whether the (consumer, event
//     ID) pair is new. Its record exists once that transaction commits and
//     never if it rolls back.
//   - Concurrent deliveries of one event: a Record that meets a record
//     of another open transaction waits for that transaction to end, then
//     reports a duplicate if it committed, or records if it rolled back.
//     Exactly one delivery sees a first record and commits; a SQL store
//     gets this from a primary key on (consumer, event_id) and
//     INSERT … ON CONFLICT DO NOTHING.
//   - Records are kept per consumer name: two consumers of one event each
//     process it once. Consumer names must be stable across restarts.
//   - [Store.Purge] deletes old records. An event redelivered after its
//     record was purged is processed again, so keep records longer than the
//     transport may redeliver (for a broker, its retention).
//   - Stores read the time only from their outbox.Clock.
//
// Guaranteed: the database effects of an event are applied once per
// consumer, whatever the number of deliveries. Not guaranteed: effects
// outside the transaction (an e-mail, an HTTP call) are repeated if the
// consumer crashes after them and before the commit; make them idempotent
// or send them through an outbox.
//
// Package inboxtest is the conformance kit of inbox stores.
//
// # Why a package of its own
//
// The inbox is what a consumer needs, and a consumer service may have no
// outbox at all; looking for deduplication, a reader finds "inbox" next to
// "outbox" under events. It shares the outbox's transaction mechanism
// (outbox.Transactor, outbox.MemoryTx, the clock and the argument errors)
// rather than defining its own, so that one Transactor serves both, and SQL
// stores implement both in one module.
package inbox
