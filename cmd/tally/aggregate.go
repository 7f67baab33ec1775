package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/tally-billing/tally/aggregate/worker"
	"github.com/tally-billing/tally/contract"
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
	fs := newFlags("aggregate")
	rf := addRoleFlags(fs, "127.0.0.1:9103", true)
	kf, tf := rf.kafka, rf.topics
	group := fs.String("group", "tally-aggregate", "Kafka consumer group of the aggregator instances")
	window := fs.Int("dedup-window", 100_000, "records per partition within which a retried event id is dropped")
	openMonths := fs.Int("open-months", 3, "billing months that keep running totals, the newest received one included (older ones: the exact recount of usage_events; 0: keep all)")
	interval := fs.Duration("checkpoint-interval", time.Second, "how often totals are checkpointed and published")
	session := fs.Duration("session-timeout", 10*time.Second, "how soon the group reassigns the partitions of a member that died")
	apiAddr := fs.String("api-addr", "127.0.0.1:8081", "address of the usage query API (empty: none)")
	keyFlags := addKeyFlags(fs, "query-keys", "query-rate-limit", "query API (tenants: ;accounts=…; operators: unscoped)")
	tlsFlags := addTLSFlags(fs, "", "query API")
	reconcileEvery := fs.Duration("reconcile-interval", 5*time.Minute, "how often to compare running totals with the exact recount (0: never)")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	kc, err := kf.cluster()
	if err != nil {
		return err
	}
	r, cfg, conn, err := rf.start(ctx, env, kc)
	if err != nil {
		return err
	}
	log := r.log
	w, err := worker.New(worker.Config{Brokers: kc.Brokers, Security: kc.Security, Topic: *tf.usage, TotalsTopic: *tf.totals, Group: *group, Window: *window, OpenMonths: *openMonths,
		CheckpointInterval: *interval, SessionTimeout: *session, Location: cfg.Location, Services: cfg.Catalogue}, conn, log, worker.NewMetrics(r.registry))
	if err != nil {
		return err
	}
	accounts := worker.NewAccounts(kc, *tf.accounts, cfg.Catalogue, log)
	statuses := worker.NewStatuses(kc, *tf.status, log)
	r.run(w.Run)
	r.run(accounts.Run)
	r.run(statuses.Run)
	r.admin.AddCheck("accounts topic", accounts.Loaded)
	r.admin.AddCheck("account-status topic", statuses.Loaded)
	if *reconcileEvery > 0 {
		r.run(func(ctx context.Context) error { return w.ReconcileEvery(ctx, *reconcileEvery, env.clock()) })
	}
	if *apiAddr != "" {
		ring, err := keyFlags.ring(ctx, "query API", log)
		if err != nil {
			return err
		}
		api := &worker.API{Worker: w, Accounts: accounts, Statuses: statuses, Usage: conn, Billing: cfg, Now: env.clock(), Keys: ring, Registry: r.registry}
		certs, err := tlsFlags.load(ctx, "query API", log)
		if err != nil {
			return err
		}
		if err := r.serveHTTP("usage query API", *apiAddr, api.Handler(), 5*time.Second, certs); err != nil {
			return err
		}
	}
	return r.wait()
}

func runReconcile(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("reconcile")
	tf := addTopicFlags(fs)
	cf := addClickHouseFlags(fs)
	group := fs.String("group", "tally-aggregate", "the aggregator's consumer group")
	period := fs.String("period", "", "billing month YYYY-MM (required)")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	p, err := contract.ParsePeriod(*period)
	if err != nil {
		return fmt.Errorf("--period: %w", err)
	}
	conn, err := cf.open(ctx)
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
