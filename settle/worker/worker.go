// Package worker runs the billing core live on Kafka and ClickHouse: `tally settle`.
//
// The worker keeps a journal, a one-partition Kafka topic holding, in the order it applied them,
// every input it consumed from the accounts and ledger topics (each stamped with recordedat, the
// worker's clock) and a clock tick at each month's settlement instant. Usage is not journalled:
// before each tick the worker feeds the engine the usage ingest received since the previous tick,
// read from ClickHouse usage_events once the sink has written all of it (the watermark), each
// identity's first copy only. So the engine always sees one deterministic log, and:
//
//   - after each settlement the worker saves a snapshot of the billing state (settle_snapshots);
//     a restart restores the latest one and replays only the journal after it (or, without a
//     usable snapshot, the whole journal and the usage between its ticks), and emits only the
//     events the billing topic does not hold yet (ids are deterministic);
//   - `tally export` writes that same log as JSON lines, and `tally replay` over it reproduces
//     the billing topic byte for byte.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/telemetry"
	"github.com/tally-billing/tally/settle"
)

// Config of the settle worker.
type Config struct {
	Brokers []string
	// Security is how connections to Kafka are made (SASL, TLS); zero: plaintext.
	Security                                kafkax.Security
	UsageTopic, AccountsTopic, LedgerTopic  string
	BillingTopic, StatusTopic, JournalTopic string
	SinkGroup                               string // whose progress says usage is complete
	Billing                                 settle.Config
	Grace                                   time.Duration
	Clock                                   func() time.Time
	PollInterval                            time.Duration
}

// kafka is the cluster the worker reads and writes.
func (c Config) kafka() kafkax.Cluster {
	return kafkax.Cluster{Brokers: c.Brokers, Security: c.Security}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 || c.UsageTopic == "" || c.AccountsTopic == "" || c.LedgerTopic == "" || c.BillingTopic == "" || c.StatusTopic == "" || c.JournalTopic == "" || c.SinkGroup == "" {
		errs = append(errs, errors.New("settle worker: brokers, every topic and the sink group are required"))
	}
	if c.Grace < 0 || c.PollInterval <= 0 || c.Clock == nil {
		errs = append(errs, errors.New("settle worker: grace must not be negative, poll interval positive, clock set"))
	}
	return errors.Join(append(errs, c.Billing.Validate())...)
}

// Metrics of the settle worker.
type Metrics struct {
	Overdue       prometheus.Gauge
	Emitted       *prometheus.CounterVec
	Settled       prometheus.Gauge
	WaitingOnSink prometheus.Gauge
	Journalled    prometheus.Counter
	// Snapshots saved, and where the last start recovered from: how long restarts take.
	SnapshotsSaved  prometheus.Counter
	RecoveryOffset  prometheus.Gauge
	RecoveryEntries prometheus.Gauge
	Leading         prometheus.Gauge // 1 while this instance holds the journal (Elected)
	// UsageRead counts usage events given to the engine, by how: "summary" (many as one
	// (account, service, month) total) or "event" (one by one).
	UsageRead *prometheus.CounterVec
}

// NewMetrics registers the worker's metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Emitted:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_settle_events_emitted_total", Help: "Events written to the billing topic, by type."}, []string{"type"}),
		Settled:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_settle_last_settled_period", Help: "The last settled month as YYYYMM."}),
		WaitingOnSink: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_settle_waiting_on_sink", Help: "1 while a due settlement waits for the sink to write all usage before its instant."}),
		Journalled:    prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_settle_inputs_journalled_total", Help: "Account and ledger inputs applied."}),
		Overdue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_settle_overdue",
			Help: "1 when a month is still unsettled at the end of day 3 of the next month (bills are late: page someone)."}),
	}
	m.SnapshotsSaved = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_settle_snapshots_saved_total", Help: "Billing-state snapshots saved (one after each settlement)."})
	m.RecoveryOffset = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_settle_recovery_journal_offset",
		Help: "Journal offset the last start replayed from: after the latest snapshot, or 0 (the whole journal)."})
	m.RecoveryEntries = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_settle_recovery_log_entries", Help: "Journal entries the last start replayed (usage is read back from usage_events as month totals)."})
	m.Leading = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_settle_leading", Help: "1 while this instance holds the journal and settles; 0 on a standby."})
	m.UsageRead = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_settle_usage_events_read_total",
		Help: "Usage events given to the billing core, by how: as (account, service, month) summaries, or event by event."}, []string{"as"})
	reg.MustRegister(m.Emitted, m.Settled, m.WaitingOnSink, m.Journalled, m.Overdue, m.SnapshotsSaved, m.RecoveryOffset, m.RecoveryEntries, m.Leading, m.UsageRead)
	return m
}

// Worker is the live settlement.
type Worker struct {
	cfg     Config
	ch      driver.Conn
	log     *slog.Logger
	metrics *Metrics

	rep       *settle.Replayer
	snapshots *snapshotStore
	// emitted holds the ids on the billing topic since the snapshot recovery started from, while
	// recovering; nil afterwards (a running engine never emits an id twice).
	emitted   map[string]bool
	out       *Emitter
	ctx       context.Context // Run's: the engine's emit callback takes none
	journal   *topicWriter    // partition 0: the journal has one
	clock     time.Time       // the journal's clock: the largest recordedat written
	first     time.Time       // the first journalled input's recordedat
	lastTick  time.Time       // the last settlement instant
	firstTick time.Time       // before the first settlement: its instant, once known (tickDue)
	// firstTickChecked is when firstTick was last worked out; backfilling: it is "now" for good.
	firstTickChecked time.Time
	backfilling      bool
	fed              Offsets          // usage offsets fed to the engine so far (what the last tick covered)
	next             map[string]int64 // "topic/partition" → next offset to consume

	// The two children of metrics.UsageRead, looked up once: usage is counted per event.
	usageByEvent, usageBySummary prometheus.Counter

	mu   sync.Mutex
	late bool // a settlement is past day 3
}

// New builds the worker; ch is a connection to the database holding usage_events.
func New(cfg Config, ch driver.Conn, log *slog.Logger, metrics *Metrics) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, ch: ch, log: log, metrics: metrics, emitted: map[string]bool{}, next: map[string]int64{}, fed: Offsets{},
		snapshots: &snapshotStore{ch: ch, topic: cfg.JournalTopic}, ctx: context.Background(),
		journal:      newTopicWriter(cfg.kafka(), cfg.JournalTopic, journalChunkBytes),
		usageByEvent: metrics.UsageRead.WithLabelValues("event"), usageBySummary: metrics.UsageRead.WithLabelValues("summary")}
	out, err := NewEmitter(DefaultEmitterConfig(cfg.kafka(), cfg.BillingTopic, cfg.StatusTopic), func(typ string, n int) {
		telemetry.AddInt(metrics.Emitted.WithLabelValues(typ), int64(n))
	})
	if err != nil {
		return nil, err
	}
	w.out = out
	rep, err := settle.NewReplayer(cfg.Billing, w.replayOptions(), w.emit)
	if err != nil {
		return nil, err
	}
	w.rep = rep
	return w, nil
}

// emit hands an event the engine emitted to the emitter, unless the billing topic has it already
// (a restart re-derives every event since its snapshot; ids are deterministic).
func (w *Worker) emit(o cloudevent.Out) error {
	if w.emitted[o.ID] {
		return nil
	}
	return w.out.Add(w.ctx, o)
}

// line applies one log line; a line the billing core rejects is logged and skipped (it changes
// nothing, in replay too).
func (w *Worker) line(raw []byte) error { return w.applied(w.rep.Line(raw)) }

// usage applies a stored usage event as line applies its log line (UsageLine), only faster.
func (w *Worker) usage(u contract.Usage, received time.Time) error {
	w.usageByEvent.Inc()
	return w.applied(w.rep.StoredUsage(u, received, func() []byte { return UsageLine(u, received) }))
}

// applied logs and drops a rejection of a log entry, and keeps the settled-period gauge current.
func (w *Worker) applied(err error) error {
	var rej *settle.Rejection
	if errors.As(err, &rej) {
		w.log.Warn("settle: input rejected", "reason", rej.Reason, "id", rej.ID, "type", rej.Type)
		return nil
	}
	if err == nil {
		if s := w.rep.Engine().Settled(); !s.IsZero() {
			telemetry.SetInt(w.metrics.Settled, int64(s.YYYYMM()))
		}
	}
	return err
}

// Run recovers from the latest snapshot and the journal after it (or the whole journal), then
// settles live until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	defer w.out.Close()
	defer w.journal.close()
	w.ctx = ctx
	err := w.run(ctx)
	if ctx.Err() != nil {
		return nil // shutdown: whatever was not written is re-derived at the next start
	}
	return err
}

func (w *Worker) run(ctx context.Context) error {
	from, covered, billingFrom, err := w.restore(ctx)
	if err != nil {
		return err
	}
	parts, err := kafkax.Partitions(ctx, w.cfg.kafka(), w.cfg.BillingTopic)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := kafkax.ReadPartitionFrom(ctx, w.cfg.kafka(), w.cfg.BillingTopic, p, billingFrom[p], func(m kafka.Message) error {
			var o struct{ ID string }
			if json.Unmarshal(m.Value, &o) == nil && o.ID != "" {
				w.emitted[o.ID] = true
			}
			return nil
		}); err != nil {
			return fmt.Errorf("read emitted events: %w", err)
		}
	}
	n, ticks := 0, 0
	copies := &journalCopies{next: maps.Clone(w.next), lastTick: w.lastTick}
	if err := journalFrom(ctx, w.cfg.kafka(), w.cfg.JournalTopic, from, covered, copies, func(from, to Offsets) error {
		return w.feedUsage(ctx, from, to)
	}, func(e Entry) error {
		n++
		if e.Tick {
			w.lastTick, w.fed = e.RecordedAt, e.Covered
			ticks++
		}
		if e.Source != "" {
			w.next[e.Source] = e.Offset + 1
			if w.first.IsZero() {
				w.first = e.RecordedAt
			}
		}
		if e.RecordedAt.After(w.clock) {
			w.clock = e.RecordedAt
		}
		return w.line(e.Line)
	}); err != nil {
		return fmt.Errorf("recover from the journal: %w", err)
	}
	if err := w.out.Flush(ctx); err != nil {
		return err
	}
	telemetry.SetInt(w.metrics.RecoveryOffset, from)
	telemetry.SetInt(w.metrics.RecoveryEntries, int64(n))
	w.log.Info("settle: recovered", "from_journal_offset", from, "log_entries_replayed", n, "journal_copies_skipped", copies.dropped, "events_emitted_since_snapshot", len(w.emitted),
		"last_settled", w.rep.Engine().Settled().String(), "clock", w.clock)
	w.emitted = nil
	if ticks > 0 { // settlements the latest snapshot does not hold: save one, so the next restart is short
		w.takeSnapshot(ctx)
	}
	return w.live(ctx)
}

// restore loads the latest snapshot, if there is a usable one, and says where recovery goes on:
// the journal offset, the usage offsets fed so far and the billing offsets to dedupe emission from.
func (w *Worker) restore(ctx context.Context) (int64, Offsets, map[int]int64, error) {
	meta, state, err := w.snapshots.latest(ctx)
	if err != nil || meta == nil {
		return 0, Offsets{}, nil, err
	}
	rep, err := settle.RestoreReplayer(w.cfg.Billing, w.replayOptions(), w.emit, state)
	if err != nil {
		w.log.Warn("settle: the latest snapshot is unusable; replaying the journal from its start", "journal_offset", meta.JournalOffset, "err", err)
		return 0, Offsets{}, nil, nil
	}
	w.rep, w.lastTick, w.clock, w.first = rep, meta.Tick, meta.Clock, meta.First
	w.fed = maps.Clone(meta.Fed)
	if w.fed == nil {
		w.fed = Offsets{}
	}
	maps.Copy(w.next, meta.Next)
	if s := rep.Engine().Settled(); !s.IsZero() {
		telemetry.SetInt(w.metrics.Settled, int64(s.YYYYMM()))
	}
	w.log.Info("settle: restored the snapshot", "journal_offset", meta.JournalOffset, "settlement", meta.Tick)
	return meta.JournalOffset + 1, maps.Clone(w.fed), meta.Billing, nil
}

// takeSnapshot saves the state, which holds the journal up to its last record (a settlement's
// tick, or the end at a recovery).
// A failure costs only restart time, so it is logged, not returned.
func (w *Worker) takeSnapshot(ctx context.Context) {
	start := time.Now()
	size, journalOffset, err := w.saveSnapshot(ctx)
	if err != nil && !errors.Is(err, errOlderSnapshotsKept) {
		w.log.Warn("settle: saving a snapshot failed (a restart replays more of the journal)", "err", err)
		return
	}
	w.metrics.SnapshotsSaved.Inc()
	w.log.Info("settle: snapshot saved", "journal_offset", journalOffset, "bytes", size, "seconds", time.Since(start).Seconds(), "warning", err)
}

func (w *Worker) saveSnapshot(ctx context.Context) (size int, journalOffset int64, err error) {
	journalEnd, err := kafkax.EndOffsets(ctx, w.cfg.kafka(), w.cfg.JournalTopic)
	if err != nil {
		return 0, 0, err
	}
	billing, err := kafkax.EndOffsets(ctx, w.cfg.kafka(), w.cfg.BillingTopic)
	if err != nil {
		return 0, 0, err
	}
	meta := snapshotMeta{JournalOffset: journalEnd[0] - 1, Tick: w.lastTick, Clock: w.clock, First: w.first, Fed: w.fed, Next: w.next, Billing: billing}
	size, err = w.snapshots.save(ctx, meta, w.rep.Snapshot)
	return size, meta.JournalOffset, err
}

func (w *Worker) live(ctx context.Context) error {
	readers := map[string]*kafka.Reader{}
	for _, topic := range []string{w.cfg.AccountsTopic, w.cfg.LedgerTopic} {
		parts, err := kafkax.Partitions(ctx, w.cfg.kafka(), topic)
		if err != nil {
			return err
		}
		for _, p := range parts {
			src := topic + "/" + strconv.Itoa(p)
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: w.cfg.Brokers, Dialer: w.cfg.Security.Dialer(), Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond})
			defer r.Close()
			start, ok := w.next[src]
			if !ok {
				start = kafka.FirstOffset
			}
			resume := kafkax.Continuity{Brokers: w.cfg.Brokers, Security: w.cfg.Security, Topic: topic, Partition: p, Next: max(start, 0)}
			if err := w.inputsLost(resume.Resume(ctx)); err != nil {
				return err
			}
			if err := r.SetOffset(start); err != nil {
				return fmt.Errorf("seek %s: %w", src, err)
			}
			readers[src] = r
		}
	}
	for ctx.Err() == nil {
		now := w.cfg.Clock()
		if now.Before(w.clock) {
			now = w.clock
		}
		due, s, err := w.tickDue(ctx, now)
		if err != nil {
			return err
		}
		if due {
			covered, why, err := usageComplete(ctx, w.ch, w.cfg.kafka(), w.cfg.UsageTopic, w.cfg.SinkGroup, s)
			if err != nil && ctx.Err() == nil {
				// Only a look (offsets, the sink's progress), nothing written: a partition whose
				// leader is moving to another broker, or a ClickHouse restart, is waited out
				// here rather than by a restart of the whole worker.
				covered, why = nil, "cannot tell: "+err.Error()
			}
			if covered == nil {
				// Hold every input until the month can settle: nothing recorded after the
				// settlement instant may come before it in the log.
				w.metrics.WaitingOnSink.Set(1)
				if w.overdue(s, now) {
					w.log.Error("settle: BILLS ARE LATE: the month is still unsettled at the end of day 3; the sink has not written all usage",
						"instant", s, "detail", why)
				} else {
					w.log.Info("settle: settlement due, waiting for the sink", "instant", s, "detail", why)
				}
				sleep(ctx, w.cfg.PollInterval)
				continue
			}
			w.metrics.WaitingOnSink.Set(0)
			w.metrics.Overdue.Set(0)
			w.mu.Lock()
			w.late = false
			w.mu.Unlock()
			if err := w.settleAt(ctx, s, covered); err != nil {
				return err
			}
			w.takeSnapshot(ctx)
			continue
		}
		inputs := fetchInputs(ctx, readers, maxInputsPerPass)
		if err := w.journalInputs(ctx, inputs, now); err != nil {
			return err
		}
		// A ledger reply or an account change may have emitted (a suspension, a resumption).
		if err := w.out.Flush(ctx); err != nil {
			return err
		}
		if len(inputs) == 0 {
			sleep(ctx, w.cfg.PollInterval)
		}
	}
	return nil
}

// tickDue says whether a settlement instant s has come: ticks are at every month's end plus the
// grace period, from the month of the first thing received or used.
//
// The first tick is chosen once per start. Normally it is the instant of the month holding the
// first usage or input, and a worker started late (down on day 1) bills what it would have billed
// then. But when nothing was received before that instant (a deployment started after the month,
// usage re-ingested or restored after the fact) no run could have billed anything then: the first
// tick is the instant the worker sees that, so every month due by then settles on time with all
// the usage received so far, instead of a month later as adjustments.
func (w *Worker) tickDue(ctx context.Context, now time.Time) (bool, time.Time, error) {
	loc := w.cfg.Billing.Location
	if !w.lastTick.IsZero() {
		// The month holding lastTick − grace ends after lastTick: the next month-end instant.
		s := contract.PeriodOf(w.lastTick.Add(-w.cfg.Grace), loc).End(loc).Add(w.cfg.Grace)
		return !now.Before(s), s, nil
	}
	// Until the first settlement, look again now and then: the sink may not have written the
	// earliest usage yet, and an input journalled late (a slow start) names a later month.
	if w.firstTick.IsZero() || (!w.backfilling && time.Since(w.firstTickChecked) >= firstTickRecheck) {
		w.firstTickChecked = time.Now()
		received, occurred, err := firstUsage(ctx, w.ch)
		if err != nil {
			return false, time.Time{}, err
		}
		if !w.first.IsZero() && (received.IsZero() || w.first.Before(received)) {
			received = w.first // the first journalled input came before any usage
		}
		if received.IsZero() {
			return false, time.Time{}, nil
		}
		first := received
		if !occurred.IsZero() && occurred.Before(first) {
			first = occurred
		}
		month := contract.PeriodOf(first, loc)
		if e := w.rep.Engine().Earliest(); !e.IsZero() && e.Before(month) {
			month = e // an input's own time (an activation, a pack's start) names an earlier month
		}
		w.firstTick = month.End(loc).Add(w.cfg.Grace)
		if !received.Before(w.firstTick) && w.firstTick.Before(now) {
			w.backfilling = true
			w.log.Info("settle: backfill: nothing was received before the first month's instant; settling every month due with all usage received so far",
				"first_month", month.String(), "first_received", received, "instant", now)
			w.firstTick = now
		}
	}
	return !now.Before(w.firstTick), w.firstTick, nil
}

// overdue reports (and records in the metric) whether the settlement due at s is past the end of
// day 3 of its month, the last day bills may be issued.
func (w *Worker) overdue(s, now time.Time) bool {
	loc := w.cfg.Billing.Location
	p := contract.PeriodOf(s.Add(-w.cfg.Grace), loc) // the month in which bills are issued
	late := !now.Before(p.Start(loc).AddDate(0, 0, 3))
	if late {
		w.metrics.Overdue.Set(1)
	}
	w.mu.Lock()
	w.late = late
	w.mu.Unlock()
	return late
}

// Ready fails while settlement is overdue, so orchestration and dashboards see it.
func (w *Worker) Ready(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.late {
		return errors.New("a month is still unsettled after day 3")
	}
	return nil
}

// settleAt feeds the usage up to the covered offsets, journals the tick and applies it.
func (w *Worker) settleAt(ctx context.Context, s time.Time, covered Offsets) error {
	for p, o := range w.fed { // a partition never goes back
		if covered[p] < o {
			covered[p] = o
		}
	}
	start := time.Now()
	if err := w.feedUsage(ctx, w.fed, covered); err != nil {
		return err
	}
	usageRead := time.Since(start)
	tick := tickLine(s, w.cfg.Billing.Location, covered)
	if err := w.journal.writePartition(ctx, 0, []kafka.Message{{Key: []byte("tick"), Value: tick, Headers: kafkax.CloudEventHeaders()}}); err != nil {
		return fmt.Errorf("journal tick: %w", err)
	}
	w.lastTick, w.clock, w.fed = s, s, covered
	w.log.Info("settle: settlement instant", "instant", s, "usage_offsets", covered)
	start = time.Now()
	if err := w.line(tick); err != nil {
		return err
	}
	if err := w.out.Flush(ctx); err != nil { // the snapshot's billing offsets must include them
		return err
	}
	w.log.Info("settle: settlement emitted", "instant", s, "usage_read_seconds", usageRead.Seconds(), "settle_and_emit_seconds", time.Since(start).Seconds())
	return nil
}

func tickLine(s time.Time, loc *time.Location, covered Offsets) []byte {
	at := s.In(loc)
	offs := map[string]int64{}
	for p, o := range covered {
		offs[strconv.Itoa(int(p))] = o
	}
	return contract.MustEncode(contract.Event{ID: "tick:" + cloudevent.FormatTime(at), Source: "tally.settle", Type: contract.ClockTickType, Time: at,
		Data: contract.ClockTickData{Offsets: offs}})
}

// input is a record read from the accounts or ledger topic.
type input struct {
	source string // "topic/partition"
	msg    kafka.Message
}

const (
	// firstTickRecheck is how often the first settlement's instant is worked out again until it
	// comes (usage the sink writes late may name an earlier month). Each look scans usage_events'
	// times, so not every pass of the loop.
	firstTickRecheck = 10 * time.Second
	// maxInputsPerPass bounds one journal write and what is applied between two looks at the clock.
	maxInputsPerPass = 10_000
	// journalChunkBytes bounds one produce request to the journal, under the broker's 1 MiB.
	journalChunkBytes = 512 << 10
	// maxInputBytes: a larger input is no account or ledger event; it is skipped, so it can never
	// make a journal write fail over and over (the broker refuses records over 1 MiB).
	maxInputBytes = 256 << 10
)

// fetchInputs takes what the readers hold already, up to max records: each reader until it has
// nothing for a moment, in turn.
func fetchInputs(ctx context.Context, readers map[string]*kafka.Reader, max int) []input {
	var got []input
	for src, r := range readers {
		for len(got) < max {
			fctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			m, err := r.FetchMessage(fctx)
			cancel()
			if err != nil {
				break
			}
			got = append(got, input{src, m})
		}
	}
	return got
}

// journalInputs stamps inputs with the journal clock, journals them in order, then applies them.
// A crash between the two is harmless: a restart applies what the journal holds.
func (w *Worker) journalInputs(ctx context.Context, inputs []input, now time.Time) error {
	seen := map[string]*kafkax.Continuity{}
	for _, in := range inputs {
		c := seen[in.source]
		if c == nil {
			topic, part, _ := splitSource(in.source)
			p, _ := strconv.Atoi(part)
			c = &kafkax.Continuity{Brokers: w.cfg.Brokers, Security: w.cfg.Security, Topic: topic, Partition: p, Next: w.next[in.source]}
			seen[in.source] = c
		}
		if err := w.inputsLost(c.Take(ctx, in.msg)); err != nil {
			return err
		}
	}
	var records []kafka.Message
	for _, in := range inputs {
		line, ok := w.stamp(in, now)
		if !ok {
			continue
		}
		topic, part, _ := splitSource(in.source)
		records = append(records, kafka.Message{Key: []byte("input"), Value: line, Headers: append(kafkax.CloudEventHeaders(),
			kafka.Header{Key: "tally-source-topic", Value: []byte(topic)}, kafka.Header{Key: "tally-source-partition", Value: []byte(part)},
			kafka.Header{Key: "tally-source-offset", Value: []byte(strconv.FormatInt(in.msg.Offset, 10))},
		)})
	}
	if len(records) > 0 {
		if err := w.journal.writePartition(ctx, 0, records); err != nil {
			return fmt.Errorf("journal inputs: %w", err)
		}
		w.clock = now
		if w.first.IsZero() {
			w.first = now
		}
	}
	for _, r := range records {
		w.metrics.Journalled.Inc()
		if err := w.line(r.Value); err != nil {
			return err
		}
	}
	for _, in := range inputs {
		w.next[in.source] = in.msg.Offset + 1
	}
	return nil
}

// inputsLost passes on err, logging it loudly first when records of an input partition are gone
// from Kafka unread (a *kafkax.DeletedError): the engine would settle without them (a recharge,
// a pack, an activation), and the bills would no longer be those of the inputs, so the worker stops.
func (w *Worker) inputsLost(err error) error {
	var gone *kafkax.DeletedError
	if errors.As(err, &gone) {
		w.log.Error("settle: INPUTS LOST: "+err.Error()+"; settling without them would bill wrongly, so the worker stops. Restore the records (the topic's retention must be infinite: `tally migrate` sets it)",
			"topic", gone.Topic, "partition", gone.Partition, "from_offset", gone.From, "first_offset", gone.First)
	}
	return err
}

// stamp adds recordedat to an input; an input that is no JSON object, or too large to be an
// account or ledger event, is logged and skipped (a restart reads it again and skips it again).
func (w *Worker) stamp(in input, now time.Time) ([]byte, bool) {
	if len(in.msg.Value) > maxInputBytes {
		w.log.Warn("settle: input too large to be an account or ledger event; skipped", "source", in.source, "offset", in.msg.Offset, "bytes", len(in.msg.Value))
		return nil, false
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(in.msg.Value, &obj); err != nil || obj == nil {
		w.log.Warn("settle: input is not a JSON object; skipped", "source", in.source, "offset", in.msg.Offset)
		return nil, false
	}
	obj["recordedat"], _ = json.Marshal(cloudevent.FormatTime(now.UTC()))
	line, err := json.Marshal(obj)
	if err != nil { // raw JSON values re-encode
		w.log.Warn("settle: input could not be re-encoded; skipped", "source", in.source, "offset", in.msg.Offset, "err", err)
		return nil, false
	}
	return line, true
}

func splitSource(src string) (topic, partition string, ok bool) {
	for i := len(src) - 1; i >= 0; i-- {
		if src[i] == '/' {
			return src[:i], src[i+1:], true
		}
	}
	return src, "", false
}

// replayOptions are the billing core's options for the worker's log, whose usage holds each
// identity once (usageRows), so the engine does not remember usage ids; and it keeps month
// totals only, the windows prepaid packs need read back from usage_events (windows).
func (w *Worker) replayOptions() settle.ReplayOptions {
	return settle.ReplayOptions{Grace: w.cfg.Grace, UsageDeduplicated: true, UsageWindows: w.windows}
}

// windows reads back the windowed calls a settlement asks for: the usage fed so far is the first
// copies below w.fed (set to a tick's offsets before the tick is applied).
func (w *Worker) windows(reqs []settle.WindowRequest) ([][]settle.CallsAt, error) {
	return windowedUsage(w.ctx, w.ch, w.fed, reqs)
}

// feedUsage gives the engine the usage first copies with offsets in [from, to): as one summary per
// (account, service, month) where that is exactly what the events one by one would do and pairs
// have several events each, otherwise (one event per pair, a receipt at a settlement instant, an
// event the fast path does not take) event by event. The engine keeps totals either way.
func (w *Worker) feedUsage(ctx context.Context, from, to Offsets) error {
	extent, err := readUsageExtent(ctx, w.ch, from, to)
	if err != nil || extent.records == 0 {
		return err
	}
	if !extent.summariesPay() || !w.rep.CanSummarize(extent.earliestCall, extent.latestReceipt) {
		return usageRows(ctx, w.ch, from, to, w.usage)
	}
	type group struct {
		account, service string
		period           contract.Period
	}
	var slow map[group]bool
	var slowPairs []clickhouse.GroupSet
	loc := w.cfg.Billing.Location
	if err := usageSummaries(ctx, w.ch, loc, from, to, func(s contract.UsageSummary) error {
		ok, err := w.rep.UsageSummary(s)
		if ok {
			telemetry.AddInt(w.usageBySummary, s.Events)
		}
		if err == nil && !ok {
			if slow == nil {
				slow = map[group]bool{}
			}
			slowPairs = append(slowPairs, clickhouse.GroupSet{Value: []any{s.Account, s.Service}})
			// Every month the events may be in (a time zone database of ClickHouse's own could
			// put a boundary elsewhere than Go's): all of them go event by event.
			for p := contract.PeriodOf(s.First, loc); !contract.PeriodOf(s.Last, loc).Before(p); p = p.Next() {
				slow[group{s.Account, s.Service, p}] = true
			}
		}
		return w.applied(err)
	}); err != nil {
		return err
	}
	if len(slow) == 0 {
		return nil
	}
	w.log.Info("settle: usage applied event by event where a summary could not stand for it", "groups", len(slow))
	return usageRowsOf(ctx, w.ch, from, to, slowPairs, func(u contract.Usage, received time.Time) error {
		if !slow[group{u.Account, u.Service, contract.PeriodOf(u.Time, loc)}] {
			return nil
		}
		return w.usage(u, received)
	})
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
