package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"

	"github.com/tally-billing/tally/examples/ledger"
)

func init() {
	register("run", command{
		summary: "migrate, then run every role (ingest, sink, aggregate, settle, billsink) in one process",
		run:     runAll,
	})
	register("ledger-example", command{
		summary: "an EXAMPLE downstream ledger for demos and tests (balances in memory, answers holds)",
		run:     runLedgerExample,
	})
}

// runAll is for small installs and the demo: each role runs with its defaults and reads the
// shared settings (TALLY_KAFKA_BROKERS, TALLY_CLICKHOUSE_HTTP, …) from the environment.
func runAll(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("run")
	withLedger := fs.Bool("with-ledger-example", false, "also run the example ledger (demos only)")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	if err := runMigrate(ctx, env, nil); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	roles := map[string]func(context.Context, *environment, []string) error{
		"ingest": runIngest, "sink": runSink, "aggregate": runAggregate, "settle": runSettle, "billsink": runBillsink,
	}
	if *withLedger {
		roles["ledger-example"] = runLedgerExample
	}
	g, gctx := errgroup.WithContext(ctx)
	for name, run := range roles {
		g.Go(func() error {
			if err := run(gctx, env, nil); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func runLedgerExample(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("ledger-example")
	kf := addKafkaFlags(fs)
	tf := addTopicFlags(fs)
	lf := addLogFlags(fs)
	balances := fs.String("balances", "", "opening balances as account=amount,account=amount")
	def := fs.String("default-balance", "100000", "opening balance of other accounts")
	httpAddr := fs.String("ledger-addr", "127.0.0.1:8082", "address of POST /v1/accounts/{a}/recharge and GET /v1/balances")
	adminAddr := fs.String("ledger-admin-addr", "127.0.0.1:9105", "address of /metrics, /healthz, /readyz")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	kc, err := kf.cluster()
	if err != nil {
		return err
	}
	log, err := lf.logger(env)
	if err != nil {
		return err
	}
	open := map[string]decimal.Decimal{}
	for _, part := range strings.Split(*balances, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		a, v, ok := strings.Cut(part, "=")
		d, err := decimal.NewFromString(v)
		if !ok || err != nil {
			return fmt.Errorf("--balances: %q is not account=amount", part)
		}
		open[a] = d
	}
	dflt, err := decimal.NewFromString(*def)
	if err != nil {
		return fmt.Errorf("--default-balance %q is not a decimal", *def)
	}
	l := ledger.New(ledger.Config{Brokers: kc.Brokers, Security: kc.Security, BillingTopic: *tf.billing, LedgerTopic: *tf.ledger, Balances: open, DefaultBalance: dflt, Now: env.clock()}, log)
	r := startRole(ctx, *adminAddr, log, nil)
	r.needKafka(kc)
	r.run(l.Run)
	if err := r.serveHTTP("example ledger", *httpAddr, l.Handler(), 5*time.Second, nil); err != nil {
		return err
	}
	return r.wait()
}
