package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tally-billing/tally/aggregate/worker"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/telemetry"
	"github.com/tally-billing/tally/settle"
)

func init() {
	register("aggregate", command{
		summary: "keep running monthly totals per account and service; serve GET /v1/accounts/{a}/usage",
		run:     runAggregate,
	})
	register("reconcile", command{
		summary: "compare running totals with an exact recount from usage_events for a month",
		run:     runReconcile,
	})
}

func runAggregate(ctx context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("aggregate", flag.ContinueOnError)
	fs.String("config", "", "JSON config file")
	kf := addKafkaFlags(fs)
	tf := addTopicFlags(fs)
	cf := addClickHouseFlags(fs)
	lf := addLogFlags(fs)
	billing := billingFlags(fs)
	group := fs.String("group", "tally-aggregate", "Kafka consumer group of the aggregator instances")
	window := fs.Int("dedup-window", 100_000, "records per partition within which a retried event id is dropped")
	interval := fs.Duration("checkpoint-interval", time.Second, "how often totals are checkpointed and published")
	session := fs.Duration("session-timeout", 10*time.Second, "how soon the group reassigns the partitions of a member that died")
	apiAddr := fs.String("api-addr", "127.0.0.1:8081", "address of the usage query API (empty: none)")
	adminAddr := fs.String("admin-addr", "127.0.0.1:9103", "address of /metrics, /healthz, /readyz")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	log, err := lf.logger(env)
	if err != nil {
		return err
	}
	cfg, err := billing()
	if err != nil {
		return err
	}
	chcfg, err := cf.config()
	if err != nil {
		return err
	}
	conn, err := chx.Open(ctx, chcfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	reg := telemetry.NewRegistry()
	w, err := worker.New(worker.Config{Brokers: kf.list(), Topic: *tf.usage, TotalsTopic: *tf.totals, Group: *group, Window: *window,
		CheckpointInterval: *interval, SessionTimeout: *session, Location: cfg.Location, Services: cfg.Catalogue}, conn, log, worker.NewMetrics(reg))
	if err != nil {
		return err
	}
	accounts := worker.NewAccounts(kf.list(), *tf.accounts, cfg.Catalogue, log)
	admin := telemetry.NewAdmin(*adminAddr, reg, log)
	admin.AddCheck("kafka", func(ctx context.Context) error { return kafkax.Ping(ctx, kf.list()) })
	admin.AddCheck("clickhouse", func(ctx context.Context) error { return chx.SelectOne(ctx, conn) })

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return admin.Run(gctx) })
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return accounts.Run(gctx) })
	if *apiAddr != "" {
		api := &worker.API{Worker: w, Accounts: accounts, Billing: cfg, Now: time.Now}
		srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 5 * time.Second}
		ln, err := net.Listen("tcp", *apiAddr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", *apiAddr, err)
		}
		log.Info("usage query API listening", "addr", ln.Addr().String())
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(shut)
		})
	}
	return g.Wait()
}

func runReconcile(ctx context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.String("config", "", "JSON config file")
	tf := addTopicFlags(fs)
	cf := addClickHouseFlags(fs)
	group := fs.String("group", "tally-aggregate", "the aggregator's consumer group")
	period := fs.String("period", "", "billing month YYYY-MM (required)")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	p, err := settle.ParsePeriod(*period)
	if err != nil {
		return fmt.Errorf("--period: %w", err)
	}
	chcfg, err := cf.config()
	if err != nil {
		return err
	}
	conn, err := chx.Open(ctx, chcfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	diffs, err := worker.Reconcile(ctx, conn, *group, *tf.usage, p)
	if err != nil {
		return err
	}
	if len(diffs) == 0 {
		fmt.Fprintf(env.stdout, "%s: running totals equal the exact recount\n", p)
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "account\tservice\trunning\texact\tdifference")
	for _, d := range diffs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%+d\n", d.Account, d.Service, d.Running, d.Exact, d.Running-d.Exact)
	}
	_ = tw.Flush()
	fmt.Fprintf(env.stderr, "%s: %d differences (if the aggregator or the sink is behind, wait and run again)\n", p, len(diffs))
	return exitError{code: 3}
}
