package main

import (
	"context"
	"time"

	"github.com/tally-billing/tally/ingest/sink"
)

func init() {
	register("sink", command{
		summary: "write usage from Kafka into ClickHouse usage_events (exactly once in effect)",
		run:     runSink,
	})
}

func runSink(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("sink")
	rf := addRoleFlags(fs, "127.0.0.1:9102", true)
	kf, tf := rf.kafka, rf.topics
	group := fs.String("group", "tally-sink", "Kafka consumer group of the sink instances")
	batchRows := fs.Int("batch-rows", 20000, "write a batch when it has this many records")
	flush := fs.Duration("flush-interval", time.Second, "...or when its first record is this old")
	session := fs.Duration("session-timeout", 10*time.Second, "how soon the group reassigns the partitions of a member that died")
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
	s, err := sink.New(sink.Config{
		Brokers: kc.Brokers, Security: kc.Security, Topic: *tf.usage, DLQTopic: *tf.dlq, Group: *group,
		BatchRows: *batchRows, FlushInterval: *flush, SessionTimeout: *session,
		Location: cfg.Location, Services: cfg.Catalogue,
	}, conn, log, sink.NewMetrics(r.registry))
	if err != nil {
		return err
	}
	r.admin.AddCheck("usage partitions", s.Ready)
	r.run(s.Run)
	return r.wait()
}
