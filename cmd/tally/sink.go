package main

import (
	"context"
	"flag"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tally-billing/tally/ingest/sink"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/telemetry"
)

func init() {
	register("sink", command{
		summary: "write usage from Kafka into ClickHouse usage_events (exactly once in effect)",
		run:     runSink,
	})
}

func runSink(ctx context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.String("config", "", "JSON config file")
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
	s, err := sink.New(sink.Config{
		Brokers: kf.list(), Topic: *tf.usage, DLQTopic: *tf.dlq, Group: *group,
		BatchRows: *batchRows, FlushInterval: *flush, SessionTimeout: *session,
		Location: cfg.Location, Services: cfg.Catalogue,
	}, conn, log, sink.NewMetrics(reg))
	if err != nil {
		return err
	}
	admin := telemetry.NewAdmin(*adminAddr, reg, log)
	admin.AddCheck("kafka", func(ctx context.Context) error { return kafkax.Ping(ctx, kf.list()) })
	admin.AddCheck("clickhouse", func(ctx context.Context) error { return chx.SelectOne(ctx, conn) })
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return admin.Run(gctx) })
	g.Go(func() error { return s.Run(gctx) })
	return g.Wait()
}
