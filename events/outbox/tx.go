package outbox

import (
	"context"
	"sync"
)

// Transactor runs functions in a database transaction carried by the
// context. Each store provides one for its database; the application's own
// repositories read the same transaction from the context, so their writes,
// the outbox rows and the inbox records commit together.
type Transactor interface {
	// InTx begins a transaction, calls fn with a ctx that carries it, and
	// commits if fn returns nil or rolls back if fn returns an error or
	// panics (the panic is then re-raised). It returns fn's error, or the
	// error of the commit. If ctx is done when fn returns, the transaction
	// is rolled back and ctx's error returned.
	//
	// If ctx already carries an open transaction of the same database, fn
	// runs in it: InTx neither commits nor rolls back, and the outermost
	// InTx decides. An error from fn is returned as is; the outer function
	// should return it, so that the whole transaction rolls back.
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// TransactorFunc adapts a function to a [Transactor].
type TransactorFunc func(ctx context.Context, fn func(ctx context.Context) error) error

// InTx calls f(ctx, fn).
func (f TransactorFunc) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return f(ctx, fn)
}

// txKey is the context key of a transaction of type T.
type txKey[T any] struct{}

// ContextWithTx returns a copy of ctx carrying tx, keyed by its type T. A
// store's [Transactor] uses it (or a key of its own) to place its
// transaction, and an application's repositories read it back with
// [TxFromContext]. A ctx carries at most one transaction of each type: the
// innermost wins.
func ContextWithTx[T any](ctx context.Context, tx T) context.Context {
	return context.WithValue(ctx, txKey[T]{}, tx)
}

// TxFromContext returns the transaction of type T carried by ctx, if any.
func TxFromContext[T any](ctx context.Context) (T, bool) {
	tx, ok := ctx.Value(txKey[T]{}).(T)
	return tx, ok
}

// MemoryTx is the transaction of the memory stores (this package's
// [MemoryStore] and the inbox's). Stores stage their writes in it with
// OnEnd and apply them when it commits, so several memory stores used in
// one [MemoryTransactor.InTx] commit or roll back together. It is safe for
// concurrent use.
type MemoryTx struct {
	mu    sync.Mutex
	ended bool
	hooks []func(committed bool)
}

// OnEnd registers f to be called once when the transaction ends, with
// committed true on commit and false on rollback. Hooks run in the order
// they were registered, on the goroutine that ends the transaction, after
// the transaction's lock is released. OnEnd returns [ErrTxDone] if the
// transaction has already ended.
func (tx *MemoryTx) OnEnd(f func(committed bool)) error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.ended {
		return ErrTxDone
	}
	tx.hooks = append(tx.hooks, f)
	return nil
}

// Open reports whether the transaction has not yet ended.
func (tx *MemoryTx) Open() bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return !tx.ended
}

func (tx *MemoryTx) end(committed bool) {
	tx.mu.Lock()
	hooks := tx.hooks
	tx.hooks, tx.ended = nil, true
	tx.mu.Unlock()
	for _, f := range hooks {
		f(committed)
	}
}

// MemoryTransactor is the [Transactor] of the memory stores. The zero value
// is ready to use; it holds no state, so any MemoryTransactor serves every
// memory store.
type MemoryTransactor struct{}

// InTx runs fn in a new *[MemoryTx], or in the open one ctx already
// carries, as [Transactor] describes.
func (MemoryTransactor) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if tx, ok := TxFromContext[*MemoryTx](ctx); ok && tx.Open() {
		return fn(ctx)
	}
	tx := &MemoryTx{}
	committed := false
	defer func() {
		if !committed {
			tx.end(false)
		}
	}()
	if err := fn(ContextWithTx(ctx, tx)); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	committed = true
	tx.end(true)
	return nil
}
