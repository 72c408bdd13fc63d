package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// defaultDialTimeout bounds a dial and the AMQP handshake when ctx has no
// earlier deadline, as amqp091-go does by default.
const defaultDialTimeout = 30 * time.Second

// dialer dials connections to one broker.
type dialer struct {
	url string
	cfg amqp.Config
}

// newDialer checks url and cfg; problems match ErrInvalidConfig.
func newDialer(url string, cfg amqp.Config) (dialer, []error) {
	var errs []error
	if url == "" {
		errs = append(errs, fmt.Errorf("%w: URL is required", ErrInvalidConfig))
	} else if _, err := amqp.ParseURI(url); err != nil {
		errs = append(errs, fmt.Errorf("%w: URL: %w", ErrInvalidConfig, redact(err, url)))
	}
	if cfg.Recovery != nil {
		errs = append(errs, fmt.Errorf("%w: AMQP.Recovery must be nil: the adapter reconnects itself, "+
			"and must see every lost connection to report it", ErrInvalidConfig))
	}
	return dialer{url: url, cfg: cfg}, errs
}

// redact removes the URL, which may hold a password, from err's text.
func redact(err error, url string) error {
	if !strings.Contains(err.Error(), url) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), url, "<url>"))
}

// dial opens a connection, bounded by ctx: the TCP dial and the AMQP
// handshake are abandoned once ctx is done.
func (d dialer) dial(ctx context.Context) (*amqp.Connection, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg := d.cfg
	cfg.Properties = maps.Clone(cfg.Properties)
	cfg.SASL = append([]amqp.Authentication(nil), cfg.SASL...)
	var (
		mu      sync.Mutex
		netConn net.Conn
	)
	inner := cfg.Dial
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		var (
			c   net.Conn
			err error
		)
		deadline := time.Now().Add(defaultDialTimeout)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		if inner != nil {
			c, err = inner(network, addr)
		} else {
			var nd net.Dialer
			dctx, cancel := context.WithDeadline(ctx, deadline)
			c, err = nd.DialContext(dctx, network, addr)
			cancel()
		}
		if err != nil {
			return nil, err
		}
		// The handshake deadline; amqp091-go clears it once the
		// connection is open.
		if err := c.SetDeadline(deadline); err != nil {
			_ = c.Close()
			return nil, err
		}
		mu.Lock()
		netConn = c
		mu.Unlock()
		return c, nil
	}
	// Once ctx is done, a handshake in progress fails at once.
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if netConn != nil {
			_ = netConn.SetDeadline(time.Now())
		}
	})
	conn, err := amqp.DialConfig(d.url, cfg)
	if !stop() && err == nil {
		// ctx ended as the handshake completed: the deadline may be set.
		_ = conn.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("rabbitmq: dial: %w", cerr)
		}
		return nil, fmt.Errorf("rabbitmq: dial: %w", redact(err, d.url))
	}
	return conn, nil
}

// killOnDone closes conn at once (whatever it is blocked on: a socket
// write held by TCP back-pressure, an RPC without reply) if ctx is done
// before stop is called. It reports through stop whether it did.
func killOnDone(ctx context.Context, conn *amqp.Connection) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		_ = conn.CloseDeadline(time.Now())
	})
}
