package sqlite

import "errors"

// The errors of this package. Errors of the outbox and inbox contracts are
// package outbox's: outbox.ErrNoTx, outbox.ErrTxDone,
// outbox.ErrInvalidEnvelope, outbox.ErrInvalidArgument, outbox.ErrNotFound
// and *outbox.LeaseError (matching outbox.ErrLeaseLost). Those of the saga
// store are package saga's: saga.ErrExists, saga.ErrNotFound,
// *saga.ConflictError (matching saga.ErrConflict), saga.ErrLeaseLost and
// saga.ErrInvalidArgument.
var (
	// ErrInvalidOptions is matched by every problem [Open], [DSN], [New],
	// [NewStore], [NewInbox], [NewSagaStore], [OutboxSchema], [InboxSchema]
	// and [SagaSchema] report about their arguments; they report all of
	// them at once.
	ErrInvalidOptions = errors.New("sqlite: invalid options")
	// ErrBusy is returned by a write that waited longer than
	// [Options.BusyTimeout] for another write transaction of this process.
	ErrBusy = errors.New("sqlite: database busy")
	// ErrInTx is returned by a store method that writes in a transaction
	// of its own (Claim, MarkSent, MarkFailed, Release, Requeue,
	// RequeueAllDead, DeleteDead, DeleteSent, Purge, EnsureSchema, and the
	// saga store's Claim, Renew and Purge) when its context carries an open
	// transaction [DB.InTx] began on the same database: that transaction
	// holds the write lock the method would wait for.
	ErrInTx = errors.New("sqlite: called inside a transaction of the same database, whose write lock it would wait for")
)
