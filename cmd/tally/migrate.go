package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
)

func init() {
	register("migrate", command{
		summary: "create the Kafka topics and apply the ClickHouse schema (idempotent)",
		run:     runMigrate,
	})
}

func runMigrate(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("migrate")
	kf := addKafkaFlags(fs)
	tf := addTopicFlags(fs)
	cf := addClickHouseFlags(fs)
	lf := addLogFlags(fs)
	partitions := fs.Int("partitions", 8, "partitions of the usage topic (the unit of parallelism of sink and aggregate)")
	otherPartitions := fs.Int("partitions-other", 4, "partitions of the other topics")
	retention := fs.Duration("usage-retention", 35*24*time.Hour, "retention of the usage and dead-letter topics (ClickHouse keeps the data)")
	skipKafka := fs.Bool("skip-kafka", false, "only apply the ClickHouse schema")
	skipClickHouse := fs.Bool("skip-clickhouse", false, "only create the Kafka topics")
	replication := fs.Int("replication-factor", 0, "replicas of each topic: new topics get this many, existing ones must have at least this many (0: the broker's default, not checked)")
	minISR := fs.Int("min-insync-replicas", 0, "min.insync.replicas of each topic, set and verified like its other settings: with acks=all (every Tally writer) a write "+
		"is acknowledged only once this many replicas have it, and refused while fewer are in sync (0: the broker's default, not set)")
	lockWait := fs.Duration("lock-wait", 2*time.Minute, "how long to wait for another migrator of the database")
	lockStale := fs.Duration("lock-stale-after", 10*time.Minute, "age after which a migrator's lock is taken to be left by a dead one and taken over (longer than the longest migration)")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	kc, err := kf.cluster()
	if err != nil {
		return err
	}
	if *minISR < 0 || *replication < 0 {
		return errors.New("--replication-factor and --min-insync-replicas must not be negative")
	}
	if *replication > 0 && *minISR > *replication {
		return fmt.Errorf("--min-insync-replicas %d is more than --replication-factor %d: no write could ever be acknowledged", *minISR, *replication)
	}
	log, err := lf.logger(env)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+*lockWait)
	defer cancel()
	if !*skipKafka {
		ret := strconv.FormatInt(retention.Milliseconds(), 10)
		compact := func() map[string]string { return map[string]string{"cleanup.policy": "compact"} }
		specs := []kafkax.TopicSpec{
			{Name: *tf.usage, Partitions: *partitions, Configs: map[string]string{"retention.ms": ret}},
			{Name: *tf.dlq, Partitions: *otherPartitions, Configs: map[string]string{"retention.ms": ret}},
			{Name: *tf.accounts, Partitions: *otherPartitions, Configs: map[string]string{"retention.ms": "-1"}},
			{Name: *tf.ledger, Partitions: *otherPartitions, Configs: map[string]string{"retention.ms": "-1"}},
			{Name: *tf.billing, Partitions: *otherPartitions, Configs: map[string]string{"retention.ms": "-1"}},
			{Name: *tf.status, Partitions: *otherPartitions, Configs: compact()},
			{Name: *tf.totals, Partitions: *otherPartitions, Configs: compact()},
			{Name: *tf.journal, Partitions: 1, ExactPartitions: true, Configs: map[string]string{"retention.ms": "-1"}},
		}
		for i := range specs {
			specs[i].ReplicationFactor = *replication
			if *minISR > 0 {
				specs[i].Configs["min.insync.replicas"] = strconv.Itoa(*minISR)
			}
		}
		checks, err := kafkax.EnsureTopics(ctx, kc, specs...)
		for _, c := range checks {
			switch {
			case c.Created:
				log.Info("kafka topic created", "topic", c.Name, "partitions", c.Partitions)
			case len(c.Repaired) > 0:
				log.Warn("kafka topic repaired: its settings differed from what Tally needs", "topic", c.Name, "partitions", c.Partitions, "set", c.Repaired)
			default:
				log.Info("kafka topic ready", "topic", c.Name, "partitions", c.Partitions)
			}
		}
		if err != nil {
			return fmt.Errorf("kafka topics: %w (is Kafka at %s running? `make up` starts one)", err, *kf.brokers)
		}
	}
	if !*skipClickHouse {
		chcfg, err := cf.config()
		if err != nil {
			return err
		}
		applied, err := chx.MigrateWith(ctx, chcfg, chschema.Migrations, log, chx.MigrateOptions{LockWait: *lockWait, StaleAfter: *lockStale})
		if err != nil {
			return fmt.Errorf("clickhouse schema: %w (is ClickHouse at %s running? `make up` starts one)", err, *cf.addr)
		}
		log.Info("clickhouse schema up to date", "database", *cf.database, "applied_now", len(applied))
	}
	return nil
}
