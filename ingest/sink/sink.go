// Package sink moves usage from the Kafka usage topic into ClickHouse usage_events, exactly once
// in effect:
//
//   - each partition is read from the offset recorded in ClickHouse (sink_progress), not from
//     Kafka's committed offset, so what ClickHouse holds decides where to resume;
//   - a batch is one offset range, inserted with insert_deduplication_token
//     topic-partition-first-last, so a retried batch is dropped by ClickHouse itself;
//   - usage_events is a ReplacingMergeTree keyed by the event identity, so any other duplicate
//     (a gateway retry, a batch re-cut after a crash) collapses under FINAL;
//   - the progress row is written only after the batch's rows and dead letters are durable.
//
// Records that fail validation go to the dead-letter topic with the reason and the original
// bytes; the partition never stalls on one.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/telemetry"
)

// Config of the sink.
type Config struct {
	Brokers []string
	// Security is how connections to Kafka are made (SASL, TLS); zero: plaintext.
	Security kafkax.Security
	Topic    string
	DLQTopic string
	// Group is the Kafka consumer group; sink instances in one group share the partitions.
	Group string
	// BatchRows and FlushInterval: a batch is written when it is this large or this old.
	BatchRows     int
	FlushInterval time.Duration
	// Location is the billing time zone, which decides each row's period (partition).
	Location *time.Location
	Services contract.ServiceChecker
	// SessionTimeout: how soon the group notices a member that died.
	SessionTimeout time.Duration
	// GapPollInterval is how often a partition stopped on a gap looks for its acknowledgement
	// (default 5 s).
	GapPollInterval time.Duration
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("sink: no Kafka brokers"))
	}
	if c.Topic == "" || c.DLQTopic == "" || c.Group == "" {
		errs = append(errs, errors.New("sink: topic, dead-letter topic and group must be set"))
	}
	if c.BatchRows <= 0 || c.FlushInterval <= 0 || c.SessionTimeout <= 0 || c.GapPollInterval < 0 {
		errs = append(errs, errors.New("sink: batch rows, flush interval and session timeout must be positive"))
	}
	if c.Location == nil || c.Services == nil {
		errs = append(errs, errors.New("sink: billing location and service catalogue are required"))
	}
	return errors.Join(errs...)
}

// Sink is the Kafka → ClickHouse usage writer.
type Sink struct {
	cfg     Config
	ch      driver.Conn
	dlq     *kafka.Writer
	log     *slog.Logger
	metrics *Metrics

	mu    sync.Mutex
	stops map[int]*GapError // partitions stopped on a gap
}

// New builds a sink writing through ch (a connection to the database holding usage_events).
func New(cfg Config, ch driver.Conn, log *slog.Logger, metrics *Metrics) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.GapPollInterval == 0 {
		cfg.GapPollInterval = 5 * time.Second
	}
	return &Sink{cfg: cfg, ch: ch, log: log, metrics: metrics, stops: map[int]*GapError{}, dlq: &kafka.Writer{
		Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Security.RoundTripper(), Topic: cfg.DLQTopic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, MaxAttempts: 10,
	}}, nil
}

// Run consumes until ctx ends. On a rebalance it finishes the batches in flight, then takes up
// its new partitions from their progress in ClickHouse.
func (s *Sink) Run(ctx context.Context) error {
	defer s.dlq.Close()
	if retention, err := kafkax.TopicRetention(ctx, kafkax.Cluster{Brokers: s.cfg.Brokers, Security: s.cfg.Security}, s.cfg.Topic); err == nil {
		s.metrics.Retention.Set(retention.Seconds())
	} else {
		s.log.Warn("sink: could not read the usage topic's retention (tally_sink_topic_retention_seconds stays 0)", "err", err)
	}
	return kafkax.RunGroup(ctx, kafkax.GroupConfig{Brokers: s.cfg.Brokers, Security: s.cfg.Security, Topic: s.cfg.Topic, Group: s.cfg.Group, SessionTimeout: s.cfg.SessionTimeout},
		s.log, s.metrics.Errors.Inc, s.consume)
}

// consume runs one partition until ctx ends or a write fails (the caller then restarts it from
// the progress recorded in ClickHouse, so nothing is skipped). On a gap it stops the partition
// until the gap is acknowledged, then goes on from the new progress.
func (s *Sink) consume(ctx context.Context, gen *kafka.Generation, partition int) error {
	for {
		err := s.consumeFrom(ctx, gen, partition)
		var gap *GapError
		if !errors.As(err, &gap) {
			return err
		}
		if err := s.stopped(ctx, gap); err != nil || ctx.Err() != nil {
			return err
		}
	}
}

func (s *Sink) consumeFrom(ctx context.Context, gen *kafka.Generation, partition int) error {
	next, err := s.progress(ctx, partition)
	if err != nil {
		return err
	}
	expected := next // the offset the next record must have
	if next == kafka.FirstOffset {
		expected = 0
	}
	if err := s.checkResume(ctx, partition, expected); err != nil {
		return err
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: s.cfg.Brokers, Dialer: s.cfg.Security.Dialer(), Topic: s.cfg.Topic, Partition: partition,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond, QueueCapacity: 4096,
	})
	defer r.Close()
	seen := kafkax.Continuity{Brokers: s.cfg.Brokers, Security: s.cfg.Security, Topic: s.cfg.Topic, Partition: partition, Next: expected}
	if err := r.SetOffset(expected); err != nil {
		return fmt.Errorf("seek partition %d to %d: %w", partition, expected, err)
	}
	s.log.Info("sink: consuming", "partition", partition, "from_offset", expected)
	lag := s.metrics.Lag.WithLabelValues(strconv.Itoa(partition))
	age := s.metrics.UnwrittenAge.WithLabelValues(strconv.Itoa(partition))
	b := &batch{topic: s.cfg.Topic, partition: partition}
	for {
		var stop error // a gap: write what came before it, then stop
		b.msgs, err = kafkax.FetchBatch(ctx, r, b.msgs, s.cfg.BatchRows, s.cfg.FlushInterval, func(m kafka.Message) error {
			stop = gapOf(seen.Take(ctx, m))
			return stop
		})
		if ctx.Err() != nil {
			return nil // shutting down: the unwritten batch is re-read next time
		}
		if err != nil && stop == nil {
			return err
		}
		telemetry.SetInt(lag, r.Stats().Lag)
		if len(b.msgs) > 0 {
			// How old the oldest record not yet written is: against the topic's retention, how
			// close Kafka is to deleting records the sink has not written (alert at half of it).
			age.Set(time.Since(b.msgs[0].Time).Seconds())
		} else {
			age.Set(0) // caught up: nothing waiting
		}
		if len(b.msgs) > 0 {
			if err := s.write(ctx, b); err != nil {
				return err
			}
			last := b.msgs[len(b.msgs)-1].Offset
			// Kafka's committed offset is for lag dashboards only; ClickHouse decides where to resume.
			if err := gen.CommitOffsets(map[string]map[int]int64{s.cfg.Topic: {partition: last + 1}}); err != nil && ctx.Err() == nil {
				s.log.Debug("sink: commit offset for monitoring failed", "partition", partition, "err", err)
			}
			b.msgs = b.msgs[:0]
		}
		if stop != nil {
			return stop
		}
	}
}

type batch struct {
	topic     string
	partition int
	msgs      []kafka.Message
}

// write makes a batch durable: dead letters, then rows, then the progress row.
func (s *Sink) write(ctx context.Context, b *batch) error {
	first, last := b.msgs[0].Offset, b.msgs[len(b.msgs)-1].Offset
	type row struct {
		u      contract.Usage
		period uint32
		m      *kafka.Message
	}
	rows := make([]row, 0, len(b.msgs))
	var dead []kafka.Message
	for i := range b.msgs {
		m := &b.msgs[i]
		u, err := contract.DecodeUsage(m.Value, m.Time, s.cfg.Services)
		if err != nil {
			dead = append(dead, deadLetter(m, err))
			continue
		}
		p := contract.PeriodOf(u.Time, s.cfg.Location)
		rows = append(rows, row{u: u, period: p.YYYYMM(), m: m})
	}
	if len(dead) > 0 {
		if err := s.dlq.WriteMessages(ctx, dead...); err != nil {
			return fmt.Errorf("write %d dead letters: %w", len(dead), err)
		}
		for _, d := range dead {
			s.metrics.DeadLetters.WithLabelValues(headerValue(d, HeaderCode)).Inc()
		}
	}
	token := fmt.Sprintf("%s-%d-%d-%d", b.topic, b.partition, first, last)
	if len(rows) > 0 {
		start := time.Now()
		ictx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplication_token": token}))
		ins, err := s.ch.PrepareBatch(ictx, "INSERT INTO usage_events (account, service, period, id, event_time, calls, received_at, kafka_topic, kafka_partition, kafka_offset)")
		if err != nil {
			return fmt.Errorf("prepare insert %s: %w", token, err)
		}
		for _, r := range rows {
			if err := ins.Append(r.u.Account, r.u.Service, r.period, r.u.ID, r.u.Time.UTC(), uint32(r.u.Calls), r.m.Time.UTC(),
				b.topic, int32(b.partition), r.m.Offset); err != nil {
				_ = ins.Abort()
				return fmt.Errorf("append row offset %d: %w", r.m.Offset, err)
			}
		}
		if err := ins.Send(); err != nil {
			return fmt.Errorf("insert batch %s: %w", token, err)
		}
		s.metrics.InsertSeconds.Observe(time.Since(start).Seconds())
		telemetry.AddInt(s.metrics.Rows, int64(len(rows)))
	}
	if err := RecordProgress(ctx, s.ch, ProgressRow{Consumer: s.cfg.Group, Topic: b.topic, Partition: b.partition, Next: last + 1,
		Rows: uint32(len(rows)), DeadLetters: uint32(len(dead)), Token: "progress-" + token}); err != nil {
		return err
	}
	s.metrics.BatchRows.Observe(float64(len(b.msgs)))
	return nil
}

// progress is the next offset to read for partition, from ClickHouse (FirstOffset when none).
func (s *Sink) progress(ctx context.Context, partition int) (int64, error) {
	next, err := Progress(ctx, s.ch, s.cfg.Group, s.cfg.Topic, partition)
	if next == 0 && err == nil {
		return kafka.FirstOffset, nil
	}
	return next, err
}

// ProgressRow is a row of sink_progress: consumer has written topic's partition up to Next.
type ProgressRow struct {
	Consumer, Topic   string
	Partition         int
	Next              int64
	Rows, DeadLetters uint32
	// Token is the insert's deduplication token: a retried write of the same batch is dropped.
	Token string
}

// RecordProgress writes p; write it only once the batch it ends is durable.
func RecordProgress(ctx context.Context, ch driver.Conn, p ProgressRow) error {
	pctx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplication_token": p.Token}))
	if err := ch.Exec(pctx, "INSERT INTO sink_progress (consumer, kafka_topic, kafka_partition, next_offset, rows, dead_letters, written_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
		p.Consumer, p.Topic, int32(p.Partition), p.Next, p.Rows, p.DeadLetters, time.Now().UTC()); err != nil {
		return fmt.Errorf("record progress %s: %w", p.Token, err)
	}
	return nil
}

// Progress is the offset after the last record consumer wrote of topic's partition, by what
// ClickHouse holds (0 when nothing is recorded): where a consumer resumes.
func Progress(ctx context.Context, ch driver.Conn, consumer, topic string, partition int) (int64, error) {
	var next int64
	err := ch.QueryRow(ctx, "SELECT max(next_offset) FROM sink_progress WHERE consumer = ? AND kafka_topic = ? AND kafka_partition = ?",
		consumer, topic, int32(partition)).Scan(&next)
	if err != nil {
		return 0, fmt.Errorf("read the progress of %s/%d: %w", topic, partition, err)
	}
	return next, nil
}

// Dead-letter headers.
const (
	HeaderReason    = "tally-dlq-reason"
	HeaderCode      = "tally-dlq-code"
	HeaderTopic     = "tally-source-topic"
	HeaderPartition = "tally-source-partition"
	HeaderOffset    = "tally-source-offset"
)

// deadLetter keeps the original key, bytes, time and headers (a binary-mode event's attributes
// are its ce_* headers), and says why and where from in headers of its own.
func deadLetter(m *kafka.Message, err error) kafka.Message {
	code := "invalid"
	var ce *cloudevent.Error
	if errors.As(err, &ce) && ce.Code != "" {
		code = ce.Code
	}
	return kafka.Message{Key: m.Key, Value: m.Value, Time: m.Time, Headers: append(slices.Clone(m.Headers),
		kafka.Header{Key: HeaderReason, Value: []byte(err.Error())},
		kafka.Header{Key: HeaderCode, Value: []byte(code)},
		kafka.Header{Key: HeaderTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: HeaderPartition, Value: []byte(strconv.Itoa(m.Partition))},
		kafka.Header{Key: HeaderOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
	)}
}

func headerValue(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
