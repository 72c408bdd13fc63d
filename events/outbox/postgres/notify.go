package postgres

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// closeTimeout bounds the closing of the notifier's connection.
const closeTimeout = 5 * time.Second

// Watch implements [outbox.Notifier] with LISTEN/NOTIFY. It takes a
// connection of its own out of the pool (a pgx pool's connection is
// hijacked; a database/sql connection is discarded afterwards), LISTENs on
// the store's channel, calls wake once listening, then after every
// notification: every commit that added rows through [Store.Add] (of any
// process, on the same channel), and every Release, Requeue,
// RequeueAllDead and DeleteDead that changed rows. PostgreSQL delivers a
// notification when the transaction that sent it commits, so a relay is
// woken within milliseconds of the commit.
//
// Watch returns nil once ctx is done, after closing its connection. It
// returns an error if it cannot connect or LISTEN, or if the connection is
// lost (the server restarted, the connection was terminated): the relay
// then polls ([outbox.RelayConfig.PollInterval]) and calls Watch again
// with backoff. Notifications sent while no connection listened are lost;
// polling finds their rows.
func (s *Store) Watch(ctx context.Context, wake func()) error {
	var err error
	if s.db.pool != nil {
		err = s.watchPool(ctx, wake)
	} else {
		err = s.watchSQL(ctx, wake)
	}
	if ctx.Err() != nil {
		err = nil // the watch ended because ctx is done
	}
	if err != nil {
		s.db.log.DebugContext(ctx, "postgres: outbox notifier stopped", "channel", s.channel, "error", err)
		return fmt.Errorf("postgres: outbox notifier on channel %s: %w", s.channel, err)
	}
	return nil
}

func (s *Store) watchPool(ctx context.Context, wake func()) error {
	pc, err := s.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection leaves the pool: it is LISTENing, and a notification
	// wait that ctx interrupted leaves it unfit for other work.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = conn.Close(cctx) // the connection is dropped either way
	}()
	return s.listen(ctx, conn, wake)
}

func (s *Store) watchSQL(ctx context.Context, wake func()) error {
	c, err := s.db.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }() // discarded: see below
	var watchErr error
	_ = c.Raw(func(dc any) error {
		pc, ok := dc.(interface{ Conn() *pgx.Conn })
		if !ok {
			watchErr = fmt.Errorf("%w: its connection is %T", ErrNotPgx, dc)
			return driver.ErrBadConn
		}
		watchErr = s.listen(ctx, pc.Conn(), wake)
		// The connection is LISTENing: database/sql must not hand it out
		// again. ErrBadConn makes it close the connection.
		return driver.ErrBadConn
	})
	return watchErr
}

// listen LISTENs on conn, calls wake, then waits for notifications until
// ctx is done or the connection fails; it returns the error that stopped
// it, which Watch ignores once ctx is done.
func (s *Store) listen(ctx context.Context, conn *pgx.Conn, wake func()) error {
	if _, err := conn.Exec(ctx, "LISTEN "+quote(s.channel)); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.db.log.DebugContext(ctx, "postgres: outbox notifier listening", "channel", s.channel, "pid", conn.PgConn().PID())
	wake()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("connection lost: %w", err)
		}
		wake()
	}
}
