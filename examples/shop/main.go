// Command shop runs two services that talk only through events: orders and
// inventory, with a payment step in the orders service's checkout saga.
//
//   - POST /orders places an order: the order row and its order.placed
//     event commit in one transaction (the outbox), and a relay publishes
//     the event.
//   - The inventory service consumes it (its inbox drops redeliveries),
//     reserves the stock and publishes stock.reserved (or stock.rejected)
//     through its own outbox, in the same transaction.
//   - The orders service consumes that and runs the checkout saga: payment,
//     then confirmation (order.confirmed: the inventory sells the stock),
//     or, when the payment is declined, compensation (order.cancelled: the
//     inventory releases the stock and says stock.released).
//   - GET /orders/{id}/progress streams an order's steps as server-sent
//     events.
//
// With no flag it needs nothing installed: SQLite files in a temporary
// folder and a NATS JetStream server embedded in the process. It starts
// both services, places a handful of orders (one declined, one out of
// stock), prints a timeline of what crossed which boundary, and exits.
//
//	go run ./examples/shop                      # the scripted demo
//	go run ./examples/shop -serve               # keep serving on 127.0.0.1:8080
//	go run ./examples/shop -orders 2000 -rate 500 # a load run: throughput, latency
//
// The same code runs on PostgreSQL and a real broker, one process per
// service if wished:
//
//	go run ./examples/shop -postgres postgres://postgres@127.0.0.1:5432/test -nats nats://127.0.0.1:4222 -service inventory
//	go run ./examples/shop -postgres postgres://postgres@127.0.0.1:5432/test -nats nats://127.0.0.1:4222 -service orders -serve
//
// Run it with -h for every flag.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

// config is what the command line chooses.
type config struct {
	Service  string // all, orders, inventory or relay
	Data     string // folder of the SQLite files (default: a temporary one)
	Postgres string // PostgreSQL URL: instead of SQLite
	NATS     string // NATS URL
	RabbitMQ string // RabbitMQ URL
	Kafka    string // Kafka brokers, comma-separated
	// EmbeddedNATS is the address the embedded NATS server listens on,
	// when no broker is given.
	EmbeddedNATS string
	Namespace    string // prefix of every table schema, subject, topic and queue
	Addr         string // the orders API's address
	Serve        bool   // keep serving instead of running the demo
	Orders       int    // a load run of this many orders instead of the script
	Rate         float64
	Workers      int
	Stock        int  // initial stock of each SKU (0: chosen by the run)
	NoRelay      bool // the services run no relay: a -service relay process does
	RelayLease   time.Duration
	AckWait      time.Duration
	Synchronous  string
	Concurrency  int
	NoNotify     bool          // PostgreSQL: relays poll instead of being woken by NOTIFY
	Poll         time.Duration // how often relays look for rows without a wake-up
	Verbose      bool

	Stdout io.Writer
	Logger *slog.Logger
	// Ready, if set, is told the orders API's address.
	Ready func(net.Addr)
}

// parseFlags reads the command line; environment variables give the
// defaults of the infrastructure flags.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("shop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Service, "service", "all", "the services this process runs: all, orders, inventory or relay (the relays of both services' outboxes)")
	fs.StringVar(&c.Data, "data", os.Getenv("SHOP_DATA"), "folder of the SQLite files and the embedded NATS server's store (default: a temporary folder; env SHOP_DATA)")
	fs.StringVar(&c.Postgres, "postgres", os.Getenv("SHOP_POSTGRES"), "PostgreSQL URL: store in PostgreSQL, one schema per service, instead of SQLite (env SHOP_POSTGRES)")
	fs.StringVar(&c.NATS, "nats", os.Getenv("SHOP_NATS"), "NATS URL (JetStream): use that server instead of an embedded one (env SHOP_NATS)")
	fs.StringVar(&c.RabbitMQ, "rabbitmq", os.Getenv("SHOP_RABBITMQ"), "RabbitMQ URL: use RabbitMQ as the broker (env SHOP_RABBITMQ)")
	fs.StringVar(&c.Kafka, "kafka", os.Getenv("SHOP_KAFKA"), "Kafka brokers, comma-separated: use Kafka as the broker (env SHOP_KAFKA)")
	fs.StringVar(&c.EmbeddedNATS, "embedded-nats", "", "address the embedded NATS server listens on, so that other processes can use it (default 127.0.0.1 and a free port)")
	fs.StringVar(&c.Namespace, "namespace", "shop", "prefix of the PostgreSQL schemas, subjects, topics, streams and queues")
	fs.StringVar(&c.Addr, "addr", "", "address of the orders API (default 127.0.0.1:8080 when serving, else a free port)")
	fs.BoolVar(&c.Serve, "serve", false, "keep serving until interrupted instead of running the demo")
	fs.IntVar(&c.Orders, "orders", 0, "instead of the script, place this many orders and report throughput and latency")
	fs.Float64Var(&c.Rate, "rate", 0, "with -orders: orders per second (0: as fast as -workers clients go)")
	fs.IntVar(&c.Workers, "workers", 32, "with -orders: concurrent HTTP clients")
	fs.IntVar(&c.Stock, "stock", 0, "initial stock of each SKU (default: 10 books, 5 lamps and 3 mugs for the script, -orders of each SKU for a load run, 1000 otherwise)")
	relay := fs.Bool("relay", true, "run each service's relay in its process (false: run -service relay separately)")
	fs.DurationVar(&c.RelayLease, "relay-lease", 30*time.Second, "lease of the rows a relay claims: a dead relay's rows are sent again after it")
	fs.DurationVar(&c.AckWait, "ack-wait", 30*time.Second, "NATS AckWait of the consumers: a dead consumer's messages come back after it")
	fs.StringVar(&c.Synchronous, "sqlite-sync", "FULL", "SQLite synchronous setting: FULL (survives power loss) or NORMAL (survives process crashes; faster)")
	fs.IntVar(&c.Concurrency, "concurrency", 16, "handlers each consumer runs at once")
	notify := fs.Bool("notify", true, "PostgreSQL: wake the relays with LISTEN/NOTIFY at each commit (false: they poll every -poll; NOTIFY serialises commits)")
	fs.DurationVar(&c.Poll, "poll", 100*time.Millisecond, "how often relays look for new rows without being woken (relays in other processes than the writers, and -notify=false)")
	fs.BoolVar(&c.Verbose, "v", false, "log at Info level (default: Warn when serving, Error in the demo)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.NoRelay = !*relay
	c.NoNotify = !*notify
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch c.Service {
	case "all", "orders", "inventory", "relay":
	default:
		return c, fmt.Errorf("-service must be all, orders, inventory or relay, got %q", c.Service)
	}
	brokers := 0
	for _, b := range []string{c.NATS, c.RabbitMQ, c.Kafka} {
		if b != "" {
			brokers++
		}
	}
	if brokers > 1 {
		return c, errors.New("give at most one of -nats, -rabbitmq and -kafka")
	}
	level := slog.LevelWarn
	if c.demo() {
		level = slog.LevelError // the demo prints what happens
	}
	if c.Verbose {
		level = slog.LevelInfo
	}
	c.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("service", c.Service)
	c.Stdout = os.Stdout
	return c, nil
}

// demo reports whether the process runs the scripted demo (or a load run)
// and exits, rather than serving.
func (c config) demo() bool { return !c.Serve && (c.Service == "all" || c.Service == "orders") }

func (c config) withDefaults() config {
	c.Service = cmp.Or(c.Service, "all")
	c.Namespace = cmp.Or(c.Namespace, "shop")
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
		if c.demo() {
			c.Addr = "127.0.0.1:0"
		}
	}
	c.Workers = max(c.Workers, 1)
	c.RelayLease = cmp.Or(c.RelayLease, 30*time.Second)
	c.AckWait = cmp.Or(c.AckWait, 30*time.Second)
	c.Synchronous = cmp.Or(c.Synchronous, "FULL")
	c.Concurrency = cmp.Or(c.Concurrency, 16)
	c.Poll = cmp.Or(c.Poll, 100*time.Millisecond)
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// stockOf is the initial stock of each SKU.
func (c config) stockOf() map[string]int {
	if c.demo() && c.Orders == 0 && c.Stock == 0 {
		return map[string]int{"book": 10, "lamp": 5, "mug": 3} // what the script buys
	}
	out := make(map[string]int)
	for sku := range catalog() {
		switch {
		case c.Stock > 0:
			out[sku] = c.Stock
		case c.Orders > 0:
			out[sku] = c.Orders
		default:
			out[sku] = 1000
		}
	}
	return out
}

// dbOptions chooses the database of a service.
func (c config) dbOptions(service string) dbOptions {
	conns := c.Concurrency/2 + 4 // the consumer's handlers, the API, the relay and the saga recoverer
	if c.Service == "relay" {
		conns = 4 // claims and marks, one batch at a time
	}
	return dbOptions{
		Postgres: c.Postgres, Schema: strings.ReplaceAll(c.Namespace, ".", "_") + "_" + service,
		Dir: filepath.Join(c.Data, "sqlite"), File: service + ".db", Synchronous: c.Synchronous, MaxConns: conns, NoNotify: c.NoNotify,
	}
}

// run runs the services cfg chooses until ctx is done, or runs the demo
// and returns.
func run(ctx context.Context, cfg config) error {
	cfg = cfg.withDefaults()
	log := cfg.Logger

	// Storage.
	if cfg.Data == "" {
		dir, err := os.MkdirTemp("", "shop-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		cfg.Data = dir
	}
	sqliteDir := filepath.Join(cfg.Data, "sqlite")

	// Broker.
	natsURL := cfg.NATS
	if cfg.NATS == "" && cfg.RabbitMQ == "" && cfg.Kafka == "" {
		if !cfg.demo() && cfg.Service != "all" && cfg.EmbeddedNATS == "" {
			return fmt.Errorf("-service %s needs a broker shared with the other processes: -nats, -rabbitmq or -kafka, "+
				"or -embedded-nats ADDR in one process and -nats nats://ADDR in the others", cfg.Service)
		}
		e, err := startEmbeddedNATS(cmp.Or(cfg.EmbeddedNATS, "127.0.0.1:0"), filepath.Join(cfg.Data, "nats"))
		if err != nil {
			return err
		}
		defer e.stop()
		natsURL = e.url
	}
	tr, err := openTransport(ctx, transportOptions{
		NATS: natsURL, RabbitMQ: cfg.RabbitMQ, Kafka: cfg.Kafka,
		Namespace: cfg.Namespace, AckWait: cfg.AckWait, Logger: log,
	})
	if err != nil {
		return err
	}
	defer tr.close()

	var tl *timeline
	if cfg.demo() && cfg.Orders == 0 {
		tl = newTimeline()
	}
	opts := serviceOptions{
		Namespace:   cfg.Namespace,
		Concurrency: cfg.Concurrency,
		RelayLease:  cfg.RelayLease,
		RelayPoll:   cfg.Poll,
		PollEvery:   20 * time.Millisecond,
		Timeline:    tl,
		Broker:      brokerName(cfg),
		Logger:      log,
	}

	// Databases.
	dbs := make(map[string]*database)
	defer func() {
		for _, db := range dbs {
			_ = db.close()
		}
	}()
	for _, service := range []string{"orders", "inventory"} {
		if cfg.Service == "all" || cfg.Service == service || cfg.Service == "relay" {
			db, err := openDatabase(ctx, cfg.dbOptions(service))
			if err != nil {
				return fmt.Errorf("%s database: %w", service, err)
			}
			dbs[service] = db
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	runCtx, stop := context.WithCancel(gctx)
	defer stop()
	addrs := make(chan net.Addr, 1)
	ready := func(a net.Addr) {
		addrs <- a
		if cfg.Ready != nil {
			cfg.Ready(a)
		}
	}
	var orders *ordersService
	if db := dbs["orders"]; db != nil && cfg.Service != "relay" {
		orders, err = newOrdersService(ctx, db, opts)
		if err != nil {
			return err
		}
		a := newAPI(orders)
		g.Go(func() error { return a.serve(runCtx, cfg.Addr, ready) })
		g.Go(func() error { return orders.run(runCtx, tr, !cfg.NoRelay) })
	}
	if db := dbs["inventory"]; db != nil && cfg.Service != "relay" {
		inv, err := newInventoryService(ctx, db, opts)
		if err != nil {
			return err
		}
		if err := inv.seed(ctx, cfg.stockOf()); err != nil {
			return err
		}
		g.Go(func() error { return inv.run(runCtx, tr, !cfg.NoRelay) })
	}
	if cfg.Service == "relay" {
		g.Go(func() error { return relayOnly(runCtx, dbs, tr, opts) })
	}
	where := "SQLite files in " + sqliteDir
	if cfg.Postgres != "" {
		where = "PostgreSQL at " + redact(cfg.Postgres)
	}
	log.Info("running", "storage", where, "broker", tr.name)

	if cfg.demo() {
		g.Go(func() error {
			defer stop() // the demo is over: stop the services
			var addr net.Addr
			select {
			case addr = <-addrs:
			case <-runCtx.Done():
				return nil
			}
			return runDemo(runCtx, demoRun{
				cfg: cfg, base: "http://" + addr.String(), where: where, broker: tr.name,
				orders: dbs["orders"], inventory: dbs["inventory"], tl: tl,
			})
		})
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil // interrupted
	}
	return err
}

// brokerName names the broker in the timeline.
func brokerName(cfg config) string {
	switch {
	case cfg.RabbitMQ != "":
		return "rabbitmq"
	case cfg.Kafka != "":
		return "kafka"
	default:
		return "nats"
	}
}
