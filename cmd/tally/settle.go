package main

import (
	"context"
	"fmt"
	"time"

	"github.com/tally-billing/tally/settle/worker"
)

func init() {
	register("settle", command{
		summary: "settle each month on days 1–3: bills and holds to the billing topic, ledger replies, suspensions",
		run:     runSettle,
	})
	register("export", command{
		summary: "write the settle worker's log as JSON lines (tally replay over it reproduces the billing topic)",
		run:     runExport,
	})
}

func runSettle(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("settle")
	rf := addRoleFlags(fs, "127.0.0.1:9104", true)
	kf, tf := rf.kafka, rf.topics
	grace := fs.Duration("grace", 2*time.Hour, "settle month M this long after the first instant of M+1")
	sinkGroup := fs.String("sink-group", "tally-sink", "the sink's consumer group, whose progress says all usage is in ClickHouse")
	poll := fs.Duration("poll-interval", 500*time.Millisecond, "how often to look for inputs and due settlements when idle")
	leaderGroup := fs.String("leader-group", "tally-settle", "consumer group on the journal topic electing the one instance that settles (others stand by); empty: no election, for a single instance you are sure of")
	session := fs.Duration("session-timeout", 10*time.Second, "with --leader-group: how soon a standby takes over from a leader that died")
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
	wcfg := worker.Config{Brokers: kc.Brokers, Security: kc.Security, UsageTopic: *tf.usage, AccountsTopic: *tf.accounts, LedgerTopic: *tf.ledger,
		BillingTopic: *tf.billing, StatusTopic: *tf.status, JournalTopic: *tf.journal, SinkGroup: *sinkGroup,
		Billing: cfg, Grace: *grace, Clock: env.clock(), PollInterval: *poll}
	metrics := worker.NewMetrics(r.registry)
	if *leaderGroup == "" {
		w, err := worker.New(wcfg, conn, log, metrics)
		if err != nil {
			return err
		}
		r.admin.AddCheck("settlement", w.Ready)
		r.run(w.Run)
		return r.wait()
	}
	e, err := worker.NewElected(wcfg, conn, log, metrics, *leaderGroup, *session)
	if err != nil {
		return err
	}
	r.admin.AddCheck("settlement", e.Ready)
	r.run(e.Run)
	return r.wait()
}

func runExport(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("export")
	kf := addKafkaFlags(fs)
	tf := addTopicFlags(fs)
	cf := addClickHouseFlags(fs)
	if err := env.parse(fs, args); err != nil {
		return err
	}
	kc, err := kf.cluster()
	if err != nil {
		return err
	}
	conn, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	n, err := worker.Export(ctx, kc, *tf.journal, conn, env.stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "tally export: %d lines\n", n)
	return nil
}
