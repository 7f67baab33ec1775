// Package worker runs the aggregator on Kafka and ClickHouse: a consumer group on the usage topic
// folding each assigned partition (aggregate.Partition), checkpoints in ClickHouse, the latest
// totals published to a compacted topic, and the state the query API reads.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/aggregate"
	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/telemetry"
)

// Config of the aggregator.
type Config struct {
	Brokers []string
	// Security is how connections to Kafka are made (SASL, TLS); zero: plaintext.
	Security    kafkax.Security
	Topic       string
	TotalsTopic string // compacted; empty: do not publish
	Group       string
	// Window is how many records back a retry is recognised.
	Window int
	// OpenMonths is how many billing months keep running totals (aggregate.PartitionConfig).
	OpenMonths int
	// CheckpointInterval is how often totals are checkpointed and published.
	CheckpointInterval time.Duration
	SessionTimeout     time.Duration
	Location           *time.Location
	Services           contract.ServiceChecker
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 || c.Topic == "" || c.Group == "" {
		errs = append(errs, errors.New("aggregate: brokers, topic and group are required"))
	}
	if c.Window < 1 || c.CheckpointInterval <= 0 || c.SessionTimeout <= 0 {
		errs = append(errs, errors.New("aggregate: window, checkpoint interval and session timeout must be positive"))
	}
	if c.OpenMonths < 0 {
		errs = append(errs, errors.New("aggregate: open months must not be negative (0: keep every month)"))
	}
	if c.Location == nil || c.Services == nil {
		errs = append(errs, errors.New("aggregate: billing location and service catalogue are required"))
	}
	return errors.Join(errs...)
}

// Worker is the running aggregator.
type Worker struct {
	cfg     Config
	store   *Checkpoints
	totals  *kafka.Writer
	log     *slog.Logger
	metrics *Metrics

	mu    sync.RWMutex
	parts map[int]*aggregate.Partition

	misrouted misroutedUsage
}

// New builds the aggregator; ch is a connection to the database with the aggregate tables.
func New(cfg Config, ch driver.Conn, log *slog.Logger, metrics *Metrics) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, store: &Checkpoints{ch: ch, consumer: cfg.Group, topic: cfg.Topic}, log: log, metrics: metrics, parts: map[int]*aggregate.Partition{},
		misrouted: misroutedUsage{known: map[accountMonth]bool{}}}
	if cfg.TotalsTopic != "" {
		w.totals = &kafka.Writer{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Security.RoundTripper(), Topic: cfg.TotalsTopic, Balancer: &kafka.Murmur2Balancer{},
			RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond, Compression: kafka.Lz4}
	}
	return w, nil
}

// Run folds until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	if w.totals != nil {
		defer w.totals.Close()
	}
	go w.shareMisrouted(ctx)
	return kafkax.RunGroup(ctx, kafkax.GroupConfig{Brokers: w.cfg.Brokers, Security: w.cfg.Security, Topic: w.cfg.Topic, Group: w.cfg.Group, SessionTimeout: w.cfg.SessionTimeout},
		w.log, w.metrics.Errors.Inc, w.consume)
}

func (w *Worker) reader(partition int) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{Brokers: w.cfg.Brokers, Dialer: w.cfg.Security.Dialer(), Topic: w.cfg.Topic, Partition: partition,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 50 * time.Millisecond, QueueCapacity: 4096})
}

func (w *Worker) consume(ctx context.Context, gen *kafka.Generation, partition int) error {
	totals, mark, stored, err := w.store.Load(ctx, partition)
	if err != nil {
		return err
	}
	next := mark.Next
	cs := &checkpointState{sinceFull: stored - len(totals), saved: mark.Next}
	home, err := w.homes(ctx)
	if err != nil {
		return err
	}
	p := aggregate.NewPartition(aggregate.PartitionConfig{Window: w.cfg.Window, OpenMonths: w.cfg.OpenMonths, Location: w.cfg.Location, Services: w.cfg.Services,
		Home: home, ID: partition}, totals, mark)
	if err := w.warm(ctx, p, partition, next); err != nil {
		return err
	}
	w.mu.Lock()
	w.parts[partition] = p
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.parts, partition)
		w.mu.Unlock()
	}()
	w.log.Info("aggregate: folding", "partition", partition, "from_offset", next, "keys", len(totals))

	r := w.reader(partition)
	defer r.Close()
	start := next
	if start == 0 {
		start = kafka.FirstOffset
	}
	if err := r.SetOffset(start); err != nil {
		return fmt.Errorf("seek partition %d: %w", partition, err)
	}
	seen := kafkax.Continuity{Brokers: w.cfg.Brokers, Security: w.cfg.Security, Topic: w.cfg.Topic, Partition: partition, Next: next}
	lag := w.metrics.Lag.WithLabelValues(strconv.Itoa(partition))
	tick := time.NewTicker(w.cfg.CheckpointInterval)
	defer tick.Stop()
	// Checkpoints are written in the background so the fold never waits on ClickHouse (it did,
	// and a second's worth of records queued behind each write): one at a time per partition, the
	// next taken at the first tick after the previous is written.
	saved := make(chan error, 1)
	writing := false
	defer func() {
		if writing {
			<-saved // never leave a write behind: the next owner loads what it committed
		}
	}()
	for {
		fctx, cancel := context.WithTimeout(ctx, w.cfg.CheckpointInterval)
		m, err := r.FetchMessage(fctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			// Revoked or stopping: checkpoint what is folded so the next owner starts from here.
			if writing {
				writing = false
				if err := <-saved; err != nil && !errors.Is(err, context.Canceled) {
					w.log.Warn("aggregate: checkpoint failed while stopping; writing its totals again", "partition", partition, "err", err)
				} // its changes were marked dirty again, so the last checkpoint below holds them
			}
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			if cp := w.snapshot(p, cs); cp != nil {
				return w.write(sctx, gen, p, partition, cp, cs)
			}
			return nil
		case err == nil:
			w.reportLost(partition, "fold", seen.Take(ctx, m), m.Offset)
			if misrouted, account, per := p.Fold(aggregate.Record{Offset: m.Offset, Value: m.Value, Time: m.Time}); misrouted {
				w.noteMisrouted(partition, home(account), account, per, m.Offset)
			}
			w.metrics.Records.Inc()
			w.metrics.Freshness.Observe(time.Since(m.Time).Seconds())
		case !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("fetch partition %d: %w", partition, err)
		}
		select {
		case err := <-saved:
			writing = false
			if err != nil {
				return err
			}
		default:
		}
		select {
		case <-tick.C:
			telemetry.SetInt(lag, r.Stats().Lag)
			if writing {
				break
			}
			if cp := w.snapshot(p, cs); cp != nil {
				writing = true
				go func() { saved <- w.write(ctx, gen, p, partition, cp, cs) }()
			}
		default:
		}
	}
}

// reportLost reports records Kafka deleted before the aggregator read them (err a
// *kafkax.DeletedError; other errors of the check are ignored), up to offset until. They are
// missing from the running totals (and, in the window, a retry across the restart may count
// twice). The aggregator goes on: its totals are not what bills are made of (settlement recounts
// usage_events, and the sink stops on the same hole), but it says so loudly, and reconcile shows
// the difference.
func (w *Worker) reportLost(partition int, where string, err error, until int64) {
	var gone *kafkax.DeletedError
	if !errors.As(err, &gone) || min(gone.First, until) <= gone.From {
		return
	}
	n := min(gone.First, until) - gone.From
	telemetry.AddInt(w.metrics.Lost.WithLabelValues(strconv.Itoa(partition), where), n)
	w.log.Error("aggregate: usage records were deleted from Kafka before the aggregator read them; the running totals miss them (bills do not depend on them; `tally reconcile` shows the difference, `tally gaps` what the sink lost)",
		"topic", w.cfg.Topic, "partition", partition, "from_offset", gone.From, "to_offset", gone.From+n, "records", n, "where", where)
}

// warm rebuilds the dedup window from the Window records before next.
func (w *Worker) warm(ctx context.Context, p *aggregate.Partition, partition int, next int64) error {
	if next == 0 {
		return nil
	}
	from := max(0, next-int64(w.cfg.Window))
	r := w.reader(partition)
	defer r.Close()
	if err := r.SetOffset(from); err != nil {
		return fmt.Errorf("seek partition %d for the dedup window: %w", partition, err)
	}
	seen := kafkax.Continuity{Brokers: w.cfg.Brokers, Security: w.cfg.Security, Topic: w.cfg.Topic, Partition: partition, Next: from}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("rebuild dedup window of partition %d: %w", partition, err)
		}
		w.reportLost(partition, "window", seen.Take(ctx, m), next)
		if m.Offset >= next {
			return nil
		}
		p.Warm(aggregate.Record{Offset: m.Offset, Value: m.Value, Time: m.Time})
		if m.Offset == next-1 {
			return nil
		}
	}
}

// TotalUpdate is what the compacted totals topic carries (key: account|service|period).
type TotalUpdate struct {
	Account string `json:"account"`
	Service string `json:"service"`
	Period  string `json:"period"`
	Calls   int64  `json:"calls"`
}

// fullCheckpointFactor bounds aggregate_totals: each checkpoint writes the totals that changed,
// and once the rows written since the last full checkpoint exceed this many times the partition's
// keys, a checkpoint writes every total, so older rows can go. Storage stays within a few times
// the keys; writes grow by at most 1/fullCheckpointFactor.
const fullCheckpointFactor = 4

// checkpointState is what a partition's checkpoints remember between them.
type checkpointState struct {
	sinceFull int   // rows written since the last full checkpoint
	lastFull  int64 // offset of the last full checkpoint written by this owner (0: none)
	saved     int64 // offset of the last checkpoint (retries, invalid records and closed months
	// change no total but still move it, so the committed offset never lags the fold)
}

// pendingCheckpoint is the totals a checkpoint writes: those that changed, or every total (full).
type pendingCheckpoint struct {
	changed, rows map[aggregate.Key]int64
	mark          aggregate.Mark
	openFrom      contract.Period
	full          bool
}

// snapshot takes the totals changed since the last checkpoint (nil when none). Only the folding
// goroutine calls it, so a full snapshot is of the same instant as the changes.
func (w *Worker) snapshot(p *aggregate.Partition, cs *checkpointState) *pendingCheckpoint {
	changed, mark := p.TakeDirty()
	if len(changed) == 0 && mark.Next == cs.saved {
		return nil // nothing folded since: a checkpoint would say the same
	}
	cp := &pendingCheckpoint{changed: changed, rows: changed, mark: mark, openFrom: p.OpenFrom()}
	if cs.sinceFull+len(changed) > fullCheckpointFactor*p.Keys() {
		cp.rows, cp.full = p.Totals(), true
	}
	return cp
}

// write stores a checkpoint, commits it, drops the rows a full one supersedes and publishes the
// changed totals.
func (w *Worker) write(ctx context.Context, gen *kafka.Generation, p *aggregate.Partition, partition int, cp *pendingCheckpoint, cs *checkpointState) error {
	start := time.Now()
	if err := w.store.Save(ctx, partition, cp.rows, cp.mark, cp.openFrom); err != nil {
		p.Restore(cp.changed)
		return err
	}
	w.metrics.CheckpointSeconds.Observe(time.Since(start).Seconds())
	cs.saved = cp.mark.Next
	if cp.full {
		// Rows before the previous full checkpoint, not this one: a loader that read the committed
		// offset just before this commit still finds its rows.
		if cs.lastFull > 0 {
			if err := w.store.DropBefore(ctx, partition, cs.lastFull); err != nil {
				w.log.Warn("aggregate: dropping superseded total rows failed (they only take space; the next full checkpoint retries)",
					"partition", partition, "err", err)
			}
		}
		cs.sinceFull, cs.lastFull = 0, cp.mark.Next
		w.metrics.FullCheckpoints.Inc()
	} else {
		cs.sinceFull += len(cp.changed)
	}
	if w.totals != nil && len(cp.changed) > 0 {
		msgs := make([]kafka.Message, 0, len(cp.changed))
		for k, v := range cp.changed {
			if w.misrouted.has(k.Account, k.Period) {
				w.metrics.TotalsWithheld.Inc() // partial here: the usage API answers it from the recount
				continue
			}
			raw, _ := json.Marshal(TotalUpdate{Account: k.Account, Service: k.Service, Period: k.Period.String(), Calls: v})
			msgs = append(msgs, kafka.Message{Key: []byte(k.Account + "|" + k.Service + "|" + k.Period.String()), Value: raw})
		}
		if err := w.totals.WriteMessages(ctx, msgs...); err != nil {
			w.log.Warn("aggregate: publishing totals failed (they are checkpointed; the next change republishes)", "err", err)
		}
	}
	_ = gen.CommitOffsets(map[string]map[int]int64{w.cfg.Topic: {partition: cp.mark.Next}})
	return nil
}

// AccountUsage returns an account's running totals for a period, by service, from the
// partitions this instance folds; ok is false when none of them has the account's data ready,
// closed is true when the period is closed (no running totals kept: recount usage_events).
func (w *Worker) AccountUsage(account string, per contract.Period) (totals map[string]int64, ok, closed bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := map[string]int64{}
	for _, p := range w.parts {
		if from := p.OpenFrom(); !from.IsZero() && per.Before(from) {
			closed = true
		}
		for s, v := range p.Account(account, per) {
			out[s] += v
		}
	}
	return out, len(w.parts) > 0, closed
}
