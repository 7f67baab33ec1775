// Package billsink copies what Tally billed from the billing topic into ClickHouse tables an
// analyst can query in SQL: bills, bill_lines, bill_adjustments, holds, account_status_changes
// (deploy/clickhouse/migrations/0006_billing_tables.sql; queries in the README).
//
// Exactly once in effect, with the usage sink's discipline (ingest/sink):
//   - each partition resumes from the offset recorded in ClickHouse (sink_progress, under the
//     billsink's own consumer name), written only after the batch's rows are durable;
//   - every event id is deterministic and a redelivered event carries the same bytes, so each
//     table is a ReplacingMergeTree keyed by its rows' identity: a batch read again after a crash,
//     or an event the settle worker wrote twice, collapses (queries read with FINAL); each insert
//     also carries a deduplication token, so a retried insert is dropped by ClickHouse itself.
//
// The tables are a report: the ledger's truth stays the billing topic (kept for ever). So an event
// they cannot hold (not a CloudEvent, a type that is not a billing output, an amount that would
// not fit its column exactly) is logged, counted and skipped, and records Kafka deleted before
// they were read are logged as an error and counted; neither stops the partition.
package billsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/ingest/sink"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/telemetry"
)

// Config of the billsink.
type Config struct {
	Brokers []string
	// Security is how connections to Kafka are made (SASL, TLS); zero: plaintext.
	Security kafkax.Security
	Topic    string // the billing topic
	// Group is the Kafka consumer group of the billsink instances, and the consumer its progress
	// is recorded under.
	Group string
	// BatchRows and FlushInterval: a batch is written when it has this many events or is this old.
	BatchRows      int
	FlushInterval  time.Duration
	SessionTimeout time.Duration
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("billsink: no Kafka brokers"))
	}
	if c.Topic == "" || c.Group == "" {
		errs = append(errs, errors.New("billsink: the billing topic and the group must be set"))
	}
	if c.BatchRows <= 0 || c.FlushInterval <= 0 || c.SessionTimeout <= 0 {
		errs = append(errs, errors.New("billsink: batch rows, flush interval and session timeout must be positive"))
	}
	return errors.Join(errs...)
}

// Metrics of the billsink.
type Metrics struct {
	Events  *prometheus.CounterVec // by table
	Skipped *prometheus.CounterVec // by reason
	Lost    prometheus.Counter
	Errors  prometheus.Counter
	Lag     *prometheus.GaugeVec
}

// NewMetrics registers the billsink's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_billsink_rows_total", Help: "Rows written, by table."}, []string{"table"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_billsink_events_skipped_total",
			Help: "Billing-topic records left out of the tables (not_a_cloudevent, unknown_type, bad_data); they stay on the topic."}, []string{"reason"}),
		Lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_billsink_records_lost_total",
			Help: "Billing-topic records Kafka deleted before the billsink read them (the topic's retention must be infinite); alert on any."}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_billsink_partition_errors_total", Help: "Partition failures (each retried from recorded progress)."}),
		Lag:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_billsink_consumer_lag", Help: "Records behind the end of the partition."}, []string{"partition"}),
	}
	reg.MustRegister(m.Events, m.Skipped, m.Lost, m.Errors, m.Lag)
	return m
}

// Sink is the billing topic → ClickHouse writer.
type Sink struct {
	cfg     Config
	ch      driver.Conn
	log     *slog.Logger
	metrics *Metrics
}

// New builds a billsink writing through ch (a connection to the database holding the tables).
func New(cfg Config, ch driver.Conn, log *slog.Logger, metrics *Metrics) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Sink{cfg: cfg, ch: ch, log: log, metrics: metrics}, nil
}

// Run consumes until ctx ends.
func (s *Sink) Run(ctx context.Context) error {
	return kafkax.RunGroup(ctx, kafkax.GroupConfig{Brokers: s.cfg.Brokers, Security: s.cfg.Security, Topic: s.cfg.Topic, Group: s.cfg.Group, SessionTimeout: s.cfg.SessionTimeout},
		s.log, s.metrics.Errors.Inc, s.consume)
}

// consume runs one partition from its recorded progress until ctx ends or a write fails (the
// caller then starts it again from the progress, so nothing is skipped).
func (s *Sink) consume(ctx context.Context, gen *kafka.Generation, partition int) error {
	next, err := sink.Progress(ctx, s.ch, s.cfg.Group, s.cfg.Topic, partition)
	if err != nil {
		return err
	}
	seen := kafkax.Continuity{Brokers: s.cfg.Brokers, Security: s.cfg.Security, Topic: s.cfg.Topic, Partition: partition, Next: next}
	var gone *kafkax.DeletedError
	if err := seen.Resume(ctx); errors.As(err, &gone) {
		s.lost(gone)
		next, seen.Next = gone.First, gone.First
	} else if err != nil {
		return err
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.cfg.Brokers, Dialer: s.cfg.Security.Dialer(), Topic: s.cfg.Topic, Partition: partition, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(next); err != nil {
		return fmt.Errorf("seek partition %d to %d: %w", partition, next, err)
	}
	s.log.Info("billsink: consuming", "partition", partition, "from_offset", next)
	lag := s.metrics.Lag.WithLabelValues(strconv.Itoa(partition))
	for {
		msgs, err := kafkax.FetchBatch(ctx, r, nil, s.cfg.BatchRows, s.cfg.FlushInterval, func(m kafka.Message) error {
			if err := seen.Take(ctx, m); errors.As(err, &gone) {
				s.lost(gone) // a report's gap: counted, and the partition goes on
			} else if err != nil {
				return err
			}
			return nil
		})
		if ctx.Err() != nil {
			return nil // shutting down: the unwritten batch is read again next time
		}
		if err != nil {
			return err
		}
		telemetry.SetInt(lag, r.Stats().Lag)
		if len(msgs) == 0 {
			continue
		}
		if err := s.write(ctx, partition, msgs); err != nil {
			return err
		}
		last := msgs[len(msgs)-1].Offset
		// Kafka's committed offset is for lag dashboards only; ClickHouse decides where to resume.
		if err := gen.CommitOffsets(map[string]map[int]int64{s.cfg.Topic: {partition: last + 1}}); err != nil && ctx.Err() == nil {
			s.log.Debug("billsink: commit offset for monitoring failed", "partition", partition, "err", err)
		}
	}
}

// lost logs and counts records Kafka deleted unread; the partition goes on (see the package doc).
func (s *Sink) lost(gone *kafkax.DeletedError) {
	telemetry.AddInt(s.metrics.Lost, gone.First-gone.From)
	s.log.Error("billsink: BILLING RECORDS LOST FROM THE TABLES: "+gone.Error()+"; they are gone from Kafka too. Set the billing topic's retention to infinite (`tally migrate` does)",
		"topic", gone.Topic, "partition", gone.Partition, "from_offset", gone.From, "first_offset", gone.First)
}

// write makes a batch durable: every table's rows, then the progress row.
func (s *Sink) write(ctx context.Context, partition int, msgs []kafka.Message) error {
	first, last := msgs[0].Offset, msgs[len(msgs)-1].Offset
	var r rows
	for _, m := range msgs {
		var skip *skipped
		if err := r.add(m.Value, int32(partition), m.Offset); errors.As(err, &skip) {
			s.metrics.Skipped.WithLabelValues(skip.reason).Inc()
			s.log.Error("billsink: event left out of the tables (it stays on the billing topic)", "partition", partition, "offset", m.Offset,
				"reason", skip.reason, "err", skip.err)
		}
	}
	token := fmt.Sprintf("%s-%d-%d-%d", s.cfg.Topic, partition, first, last)
	inserts := []struct {
		table, columns string
		n              int
		row            func(i int) []any
	}{
		{"bills", "bill_id, account, period, currency, total, issued_at, kafka_partition, kafka_offset", len(r.bills), func(i int) []any {
			b := r.bills[i]
			return []any{b.billID, b.account, b.period, b.currency, b.total, b.issuedAt, b.partition, b.offset}
		}},
		{"bill_lines", "bill_id, account, period, service, activated, calls, free_calls, prepaid_calls, billable_calls, tier, unit_price, amount, issued_at", len(r.lines), func(i int) []any {
			l := r.lines[i]
			return []any{l.billID, l.account, l.period, l.Service, l.Activated, l.Calls, l.FreeCalls, l.PrepaidCalls, l.BillableCalls, uint16(l.Tier), l.unitPrice, l.amount, l.issuedAt}
		}},
		{"bill_adjustments", "bill_id, account, bill_period, adjusted_period, service, calls_before, calls_after, amount, issued_at", len(r.adjustments), func(i int) []any {
			a := r.adjustments[i]
			return []any{a.billID, a.account, a.billPeriod, a.adjustedPeriod, a.service, a.callsBefore, a.callsAfter, a.amount, a.issuedAt}
		}},
		{"holds", "event_id, kind, hold_id, account, amount, for_period, basis_period, at", len(r.holds), func(i int) []any {
			h := r.holds[i]
			return []any{h.eventID, h.kind, h.holdID, h.account, h.amount, h.forPeriod, h.basisPeriod, h.at}
		}},
		{"account_status_changes", "event_id, account, status, reason, at", len(r.statuses), func(i int) []any {
			st := r.statuses[i]
			return []any{st.eventID, st.account, st.status, st.reason, st.at}
		}},
	}
	for _, in := range inserts {
		if in.n == 0 {
			continue
		}
		ictx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplication_token": in.table + "-" + token}))
		batch, err := s.ch.PrepareBatch(ictx, "INSERT INTO "+in.table+" ("+in.columns+")")
		if err != nil {
			return fmt.Errorf("prepare insert into %s (%s): %w", in.table, token, err)
		}
		for i := range in.n {
			if err := batch.Append(in.row(i)...); err != nil {
				_ = batch.Abort()
				return fmt.Errorf("append a row to %s (%s): %w", in.table, token, err)
			}
		}
		if err := batch.Send(); err != nil {
			return fmt.Errorf("insert into %s (%s): %w", in.table, token, err)
		}
		telemetry.AddInt(s.metrics.Events.WithLabelValues(in.table), int64(in.n))
	}
	return sink.RecordProgress(ctx, s.ch, sink.ProgressRow{Consumer: s.cfg.Group, Topic: s.cfg.Topic, Partition: partition, Next: last + 1,
		Rows: uint32(r.len()), Token: "progress-" + token})
}
