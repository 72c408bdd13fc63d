package postgres

import "errors"

// The errors of this package. Errors of the outbox and inbox contracts are
// package outbox's: outbox.ErrNoTx, outbox.ErrTxDone,
// outbox.ErrInvalidEnvelope, outbox.ErrInvalidArgument, outbox.ErrNotFound
// and *outbox.LeaseError (matching outbox.ErrLeaseLost). Those of the saga
// store are package saga's (mediator/saga).
var (
	// ErrInvalidOptions is matched by every problem [New], [NewSQL],
	// [NewStore], [NewInbox], [NewSagaStore], [OutboxSchema],
	// [InboxSchema] and [SagaSchema] report about their arguments; they
	// report all of them at once.
	ErrInvalidOptions = errors.New("postgres: invalid options")
	// ErrNotPgx is returned by [NewSQL] for a *sql.DB whose driver is not
	// pgx's (package github.com/jackc/pgx/v5/stdlib): the notifier needs a
	// pgx connection to LISTEN.
	ErrNotPgx = errors.New("postgres: the *sql.DB does not use the pgx driver")
)
