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
	kf := addKafkaFlags(fs)
	tf := addTopicFlags(fs)
	cf := addClickHouseFlags(fs)
	lf := addLogFlags(fs)
	billing := billingFlags(fs)
	group := fs.String("group", "tally-sink", "Kafka consumer group of the sink instances")
	batchRows := fs.Int("batch-rows", 20000, "write a batch when it has this many records")
	flush := fs.Duration("flush-interval", time.Second, "...or when its first record is this old")
	session := fs.Duration("session-timeout", 10*time.Second, "how soon the group reassigns the partitions of a member that died")
	adminAddr := fs.String("admin-addr", "127.0.0.1:9102", "address of /metrics, /healthz, /readyz")
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
	conn, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	r := startRole(ctx, *adminAddr, log)
	s, err := sink.New(sink.Config{
		Brokers: kf.list(), Topic: *tf.usage, DLQTopic: *tf.dlq, Group: *group,
		BatchRows: *batchRows, FlushInterval: *flush, SessionTimeout: *session,
		Location: cfg.Location, Services: cfg.Catalogue,
	}, conn, log, sink.NewMetrics(r.registry))
	if err != nil {
		return err
	}
	r.needKafka(kf.list())
	r.needClickHouse(conn)
	r.run(s.Run)
	return r.wait()
}
