package main

import (
	"context"
	"time"

	"github.com/tally-billing/tally/settle/billsink"
)

func init() {
	register("billsink", command{
		summary: "copy bills, holds and suspensions from the billing topic into ClickHouse tables for SQL (exactly once in effect)",
		run:     runBillsink,
	})
}

func runBillsink(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("billsink")
	rf := addRoleFlags(fs, "127.0.0.1:9106", true)
	kf, tf := rf.kafka, rf.topics
	group := fs.String("group", "tally-billsink", "Kafka consumer group of the billsink instances (also the consumer its progress is recorded under)")
	batchRows := fs.Int("batch-rows", 5000, "write a batch when it has this many events")
	flush := fs.Duration("flush-interval", time.Second, "...or when its first event is this old")
	session := fs.Duration("session-timeout", 10*time.Second, "how soon the group reassigns the partitions of a member that died")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	kc, err := kf.cluster()
	if err != nil {
		return err
	}
	r, _, conn, err := rf.start(ctx, env, kc)
	if err != nil {
		return err
	}
	s, err := billsink.New(billsink.Config{Brokers: kc.Brokers, Security: kc.Security, Topic: *tf.billing, Group: *group, BatchRows: *batchRows, FlushInterval: *flush, SessionTimeout: *session},
		conn, r.log, billsink.NewMetrics(r.registry))
	if err != nil {
		return err
	}
	r.run(s.Run)
	return r.wait()
}
