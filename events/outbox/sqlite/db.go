package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	driver "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/gocqrs/cqrs/events/outbox"
)

// Default values of [Options].
const (
	DefaultBusyTimeout  = 10 * time.Second
	DefaultSynchronous  = "FULL"
	DefaultMaxOpenConns = 8
)

// Options configures [Open], [DSN] and [New]. The zero value takes the
// defaults.
type Options struct {
	// BusyTimeout is how long a writer waits for the write lock of the
	// database, held by a transaction of this process or of another one,
	// before it fails (default 10s). In this process the wait is a queue
	// and fails with [ErrBusy]; across processes it is SQLite's
	// busy_timeout, which fails with SQLITE_BUSY.
	BusyTimeout time.Duration
	// Synchronous is SQLite's synchronous setting (Open and DSN only):
	// "FULL" (the default: a transaction that committed survives a power
	// loss), "NORMAL" (in WAL mode, a power loss may lose the last
	// transactions that committed, a process crash never does; commits
	// are faster since they do not wait for the disk) or "EXTRA".
	Synchronous string
	// MaxOpenConns bounds the connections of the pool Open creates
	// (default 8). Writers use one at a time; readers (Get, Stats, Seen,
	// the application's reads) use the others concurrently.
	MaxOpenConns int
}

func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.BusyTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: BusyTimeout must not be negative, got %v", ErrInvalidOptions, o.BusyTimeout))
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if o.BusyTimeout > 0 && o.BusyTimeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("%w: BusyTimeout must be at least 1ms, got %v", ErrInvalidOptions, o.BusyTimeout))
	}
	switch s := strings.ToUpper(o.Synchronous); s {
	case "":
		o.Synchronous = DefaultSynchronous
	case "FULL", "NORMAL", "EXTRA":
		o.Synchronous = s
	default:
		errs = append(errs, fmt.Errorf("%w: Synchronous must be FULL, NORMAL or EXTRA, got %q", ErrInvalidOptions, o.Synchronous))
	}
	if o.MaxOpenConns < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxOpenConns must not be negative, got %d", ErrInvalidOptions, o.MaxOpenConns))
	}
	if o.MaxOpenConns == 0 {
		o.MaxOpenConns = DefaultMaxOpenConns
	}
	return o, errors.Join(errs...)
}

// DSN returns the data source name of the SQLite database file at path for
// the modernc.org/sqlite driver (registered as "sqlite"), with the settings
// the stores rely on:
//
//   - _txlock=immediate: every read-write transaction begins with BEGIN
//     IMMEDIATE, taking the write lock at once, so that a transaction never
//     has to upgrade a read snapshot to a write (which fails at once with
//     SQLITE_BUSY when another connection wrote in between);
//   - busy_timeout: a writer waits for the lock instead of failing;
//   - journal_mode=WAL: readers never block the writer nor the writer them,
//     so the store can be read while a transaction is open;
//   - synchronous (FULL by default);
//   - _dqs=0: a double-quoted name that is not an identifier is an error,
//     not a string.
//
// Open uses it; pass it to sql.Open("sqlite", …) and [New] to build the
// pool yourself. It returns an error matching [ErrInvalidOptions] for
// invalid options, an empty path, ":memory:" (every connection of a pool
// would get its own, empty, database: use a file, in a temporary
// directory if it need not last) or a path that is already a "file:" URI.
func DSN(path string, opts Options) (string, error) {
	opts, err := opts.withDefaults()
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		err = errors.Join(err, fmt.Errorf("%w: path must name a database file, got %q", ErrInvalidOptions, path))
	}
	if err != nil {
		return "", err
	}
	q := url.Values{}
	q.Set("_txlock", "immediate")
	q.Set("_busy_timeout", strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10))
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", opts.Synchronous)
	q.Set("_dqs", "0")
	return "file:" + escapePath(path) + "?" + q.Encode(), nil
}

// escapePath writes path as the path of a SQLite URI: forward slashes,
// with '%', '?' and '#' escaped, and a leading slash before a Windows
// volume name.
func escapePath(path string) string {
	p := filepath.ToSlash(path)
	if filepath.VolumeName(path) != "" {
		p = "/" + p
	}
	if strings.HasPrefix(p, "//") { // not an authority
		p = "/" + strings.TrimLeft(p, "/")
	}
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// DB is a SQLite database used by the stores of this package: the pool,
// and the [outbox.Transactor] that carries its transactions in the
// context. Create it with [Open] or [New], then the stores with
// [NewStore] and [NewInbox]. It is safe for concurrent use.
//
// DB queues the write transactions of this process (InTx and the stores'
// own writes) so that they take SQLite's write lock one after the other as
// soon as it is free, instead of polling for it; writers of other
// processes wait through SQLite's busy timeout.
type DB struct {
	sql   *sql.DB
	owned bool
	busy  time.Duration
	// write holds a token while a write transaction of this process runs.
	write chan struct{}

	mu    sync.Mutex
	hubs  map[string]*hub
	stmts map[string]*sql.Stmt
}

var _ outbox.Transactor = (*DB)(nil)

// Open opens (creating it if needed) the SQLite database file at path,
// with the settings of [DSN], and checks that it can be used. Close the DB
// when done.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	dsn, err := DSN(path, opts)
	if err != nil {
		return nil, err
	}
	opts, _ = opts.withDefaults()
	pool, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	pool.SetMaxOpenConns(opts.MaxOpenConns)
	pool.SetMaxIdleConns(opts.MaxOpenConns)
	if err := ping(ctx, pool, opts.BusyTimeout); err != nil {
		_ = pool.Close() // the ping's error is the one to report
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	d := newDB(pool, opts)
	d.owned = true
	return d, nil
}

// ping opens the pool's first connection. Connections that open a new
// database file at the same moment (several processes starting on one
// file) race to switch it to WAL, and SQLite reports SQLITE_BUSY to the
// losers at once, without waiting through the busy timeout: ping tries
// again, for up to the busy timeout.
func ping(ctx context.Context, pool *sql.DB, busyTimeout time.Duration) error {
	deadline := time.Now().Add(busyTimeout)
	for attempt := 1; ; attempt++ {
		err := pool.PingContext(ctx)
		var e *driver.Error
		if err == nil || !errors.As(err, &e) || e.Code()&0xff != sqliteBusy || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(min(time.Duration(attempt)*5*time.Millisecond, 100*time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

// sqliteBusy is SQLite's primary result code SQLITE_BUSY.
const sqliteBusy = 5

// New returns a DB using pool, which the caller opened with the "sqlite"
// driver of modernc.org/sqlite and the settings of [DSN] (above all
// _txlock=immediate, a busy timeout and WAL), and closes after the DB is
// no longer used: [DB.Close] does not close it. Only opts.BusyTimeout
// applies. Create one DB per pool: the write queue is the DB's.
func New(pool *sql.DB, opts Options) (*DB, error) {
	var errs []error
	if pool == nil {
		errs = append(errs, fmt.Errorf("%w: nil *sql.DB", ErrInvalidOptions))
	}
	opts, err := opts.withDefaults()
	if err := errors.Join(append(errs, err)...); err != nil {
		return nil, err
	}
	return newDB(pool, opts), nil
}

func newDB(pool *sql.DB, opts Options) *DB {
	return &DB{
		sql:   pool,
		busy:  opts.BusyTimeout,
		write: make(chan struct{}, 1),
		hubs:  make(map[string]*hub),
		stmts: make(map[string]*sql.Stmt),
	}
}

// SQL returns the pool, for the application's reads and migrations. Writes
// that must commit with the outbox go through [DB.InTx] and the
// transaction of [DB.Tx].
func (d *DB) SQL() *sql.DB { return d.sql }

// Close closes the statements the stores prepared, and the pool if [Open]
// opened it; a pool given to [New] is the caller's to close. Stores of the
// DB must not be used afterwards.
func (d *DB) Close() error {
	d.mu.Lock()
	stmts := d.stmts
	d.stmts = make(map[string]*sql.Stmt)
	d.mu.Unlock()
	var errs []error
	for _, st := range stmts {
		errs = append(errs, st.Close())
	}
	if d.owned {
		errs = append(errs, d.sql.Close())
	}
	return errors.Join(errs...)
}

// stmt returns query prepared on the pool, preparing it on first use.
// database/sql prepares it again on each connection that runs it, once.
func (d *DB) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	d.mu.Lock()
	st, ok := d.stmts[query]
	d.mu.Unlock()
	if ok {
		return st, nil
	}
	st, err := d.sql.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if prev, ok := d.stmts[query]; ok { // prepared meanwhile by another goroutine
		_ = st.Close() // a duplicate, never used
		return prev, nil
	}
	d.stmts[query] = st
	return st, nil
}

// prepared returns query prepared for tx (or for the pool if tx is nil).
// On the first use of a query inside a transaction of a pool of one
// connection, it prepares the query on the transaction's connection only:
// preparing it on the pool would wait for a second connection forever.
func (d *DB) prepared(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	d.mu.Lock()
	st, ok := d.stmts[query]
	d.mu.Unlock()
	if !ok && tx != nil && d.sql.Stats().MaxOpenConnections == 1 {
		return tx.PrepareContext(ctx, query) // closed with the transaction
	}
	if !ok {
		var err error
		if st, err = d.stmt(ctx, query); err != nil {
			return nil, err
		}
	}
	if tx != nil {
		st = tx.StmtContext(ctx, st)
	}
	return st, nil
}

// exec runs the prepared query in tx.
func (d *DB) exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	st, err := d.prepared(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// query runs the prepared query in tx, or on the pool if tx is nil.
func (d *DB) query(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Rows, error) {
	st, err := d.prepared(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// hub returns the commit signal of table, shared by every store of the DB
// on that table.
func (d *DB) hub(table string) *hub {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.hubs[table]
	if !ok {
		h = newHub()
		d.hubs[table] = h
	}
	return h
}

// lock waits for this process's turn to write, for at most the busy
// timeout.
func (d *DB) lock(ctx context.Context) error {
	select {
	case d.write <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(d.busy)
	defer t.Stop()
	select {
	case d.write <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%w: another transaction of this process held the write lock for %v", ErrBusy, d.busy)
	}
}

func (d *DB) unlock() { <-d.write }

// begin takes the process's write turn and begins a transaction (BEGIN
// IMMEDIATE with the DSN's _txlock). Once the transaction has ended, call
// unlock.
func (d *DB) begin(ctx context.Context) (*sql.Tx, error) {
	if err := d.lock(ctx); err != nil {
		return nil, err
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		d.unlock()
		return nil, fmt.Errorf("sqlite: begin: %w", err)
	}
	return tx, nil
}

// inOwnTx runs fn in a write transaction of its own and commits it if fn
// returns nil. It refuses a ctx that carries an open transaction InTx
// began on d, which holds the write lock fn would wait for.
func (d *DB) inOwnTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if st := d.state(ctx); st != nil && !st.adopted && st.open() {
		return ErrInTx
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tx, err := d.begin(ctx)
	if err != nil {
		return err
	}
	defer d.unlock()
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // fn's error is the one to report
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	return nil
}

// InTx implements [outbox.Transactor]: it runs fn in a write transaction
// (BEGIN IMMEDIATE) carried by the ctx fn receives, where [DB.Tx],
// outbox.TxFromContext[*sql.Tx], [Store.Add] and [Inbox.Record] find it.
// It commits if fn returns nil, and rolls back if fn returns an error or
// panics (the panic goes on) or if ctx is done when fn returns (InTx then
// returns ctx's error). If ctx already carries an open transaction of d,
// fn runs in it and the outermost InTx decides.
//
// A transaction holds the write lock of the database from its beginning to
// its end: other writers, in this process or another, wait (up to the busy
// timeout). Keep it short, and do not call, inside fn, the store methods
// that write in a transaction of their own (Claim, the marks, Admin
// writes, Purge): they return [ErrInTx].
func (d *DB) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	outer, _ := ctx.Value(txKey{}).(*txState)
	if st := d.state(ctx); st != nil && st.open() {
		return fn(ctx)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tx, err := d.begin(ctx)
	if err != nil {
		return err
	}
	st := &txState{db: d, tx: tx, outer: outer}
	finished := false
	defer func() {
		if !finished { // an error, a done ctx or a panic
			st.end()
			_ = tx.Rollback() // the error reported is fn's or ctx's
			d.unlock()
		}
	}()
	txCtx := outbox.ContextWithTx(context.WithValue(ctx, txKey{}, st), tx)
	if err := fn(txCtx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	hooks := st.end()
	err = tx.Commit()
	finished = true
	d.unlock()
	if err != nil {
		if cerr := ctx.Err(); cerr != nil { // done since fn returned: rolled back
			return cerr
		}
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	for _, h := range hooks {
		h()
	}
	return nil
}

// Tx returns the transaction of d that ctx carries (placed there by
// [DB.InTx]), for the application's repositories: their writes then
// commit or roll back with the outbox rows and inbox records of the same
// transaction. A ctx carries one transaction per DB; the generic
// outbox.TxFromContext[*sql.Tx] returns the innermost *sql.Tx, of any
// database.
func (d *DB) Tx(ctx context.Context) (*sql.Tx, bool) {
	if st := d.state(ctx); st != nil {
		return st.tx, true
	}
	return nil, false
}

// WithTx returns a copy of ctx carrying tx, a transaction the caller
// began on d's pool and will end itself, so that [Store.Add] and
// [Inbox.Record] write in it, [DB.Tx] returns it and [DB.InTx] joins it.
// Begin it read-write (BeginTx with nil options, which is BEGIN IMMEDIATE
// with the settings of [DSN]). The stores cannot see when such a
// transaction commits: relays learn of its rows at their next poll rather
// than from [Store.Watch]. The stores' own writes (Claim, the marks, …)
// wait for tx like for any other writer, up to the busy timeout. Once tx
// has ended, the stores return errors matching outbox.ErrTxDone.
func (d *DB) WithTx(ctx context.Context, tx *sql.Tx) context.Context {
	outer, _ := ctx.Value(txKey{}).(*txState)
	st := &txState{db: d, tx: tx, outer: outer, adopted: true}
	return outbox.ContextWithTx(context.WithValue(ctx, txKey{}, st), tx)
}

// txKey is the context key of a *txState.
type txKey struct{}

// txState is a transaction begun by [DB.InTx] or given to [DB.WithTx].
type txState struct {
	db      *DB
	tx      *sql.Tx
	outer   *txState // the transaction ctx carried before (another DB's, or one that ended)
	adopted bool     // given to WithTx: its end is not seen

	mu     sync.Mutex // serialises the stores' statements and guards the rest
	ended  bool
	hooks  []func()
	hooked map[*hub]struct{}
}

// state returns the transaction of d that ctx carries, or nil.
func (d *DB) state(ctx context.Context) *txState {
	st, _ := ctx.Value(txKey{}).(*txState)
	for st != nil && st.db != d {
		st = st.outer
	}
	return st
}

// txOf returns the transaction of d that ctx carries, or outbox.ErrNoTx.
// Its methods return outbox.ErrTxDone once it has ended.
func (d *DB) txOf(ctx context.Context) (*txState, error) {
	if st := d.state(ctx); st != nil {
		return st, nil
	}
	return nil, outbox.ErrNoTx
}

func (st *txState) open() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return !st.ended
}

// end marks the transaction ended and returns its commit hooks.
func (st *txState) end() []func() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.ended = true
	hooks := st.hooks
	st.hooks = nil
	return hooks
}

// do runs fn with the transaction, one call at a time; it returns
// outbox.ErrTxDone once the transaction has ended. If fn succeeds and h is
// not nil, h is signalled after the transaction commits.
func (st *txState) do(h *hub, fn func(tx *sql.Tx) error) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ended {
		return outbox.ErrTxDone
	}
	if err := fn(st.tx); err != nil {
		if errors.Is(err, sql.ErrTxDone) {
			return fmt.Errorf("%w: %w", outbox.ErrTxDone, err)
		}
		return err
	}
	if h != nil && !st.adopted {
		if _, ok := st.hooked[h]; !ok {
			if st.hooked == nil {
				st.hooked = make(map[*hub]struct{}, 1)
			}
			st.hooked[h] = struct{}{}
			st.hooks = append(st.hooks, h.signal)
		}
	}
	return nil
}
