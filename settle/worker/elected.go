package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/kafkax"
)

// Elected runs the settle worker on whichever of its instances holds the journal: they form a
// Kafka consumer group on the one-partition journal topic, and only the member assigned that
// partition settles. Two workers journalling at once would apply inputs twice (a recharge twice
// is a second hold request), so a rolling update, or a second replica started by mistake, waits
// as a standby instead; when the leader stops, or dies and its session expires, a standby
// recovers from the snapshot and the journal and goes on.
//
// The group is a lease, not a fence: a leader frozen for longer than the session timeout (a long
// GC or VM pause) may write once more after a standby has taken over. Kafka transactions would
// fence it; kafka-go does not offer them.
type Elected struct {
	cfg            Config
	ch             driver.Conn
	log            *slog.Logger
	metrics        *Metrics
	group          string
	sessionTimeout time.Duration

	mu      sync.Mutex
	current *Worker // nil while a standby
}

// NewElected builds the elected worker; group is the consumer group its instances share.
func NewElected(cfg Config, ch driver.Conn, log *slog.Logger, metrics *Metrics, group string, sessionTimeout time.Duration) (*Elected, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Elected{cfg: cfg, ch: ch, log: log, metrics: metrics, group: group, sessionTimeout: sessionTimeout}, nil
}

// Run takes part in the election until ctx ends, settling while it leads.
func (e *Elected) Run(ctx context.Context) error {
	e.log.Info("settle: standing by for the journal", "group", e.group, "journal", e.cfg.JournalTopic)
	return kafkax.RunGroup(ctx, kafkax.GroupConfig{Brokers: e.cfg.Brokers, Security: e.cfg.Security, Topic: e.cfg.JournalTopic, Group: e.group, SessionTimeout: e.sessionTimeout},
		e.log, nil, func(ctx context.Context, _ *kafka.Generation, _ int) error {
			w, err := New(e.cfg, e.ch, e.log, e.metrics) // a fresh state each term: it recovers what the last leader left
			if err != nil {
				return err
			}
			e.set(w)
			defer e.set(nil)
			e.log.Info("settle: leading: this instance settles")
			err = w.Run(ctx)
			e.log.Info("settle: no longer leading", "err", err)
			return err
		})
}

func (e *Elected) set(w *Worker) {
	e.mu.Lock()
	e.current = w
	e.mu.Unlock()
	if w != nil {
		e.metrics.Leading.Set(1)
	} else {
		e.metrics.Leading.Set(0)
	}
}

// Ready is the leader's readiness (settlement not overdue); a standby is ready.
func (e *Elected) Ready(ctx context.Context) error {
	e.mu.Lock()
	w := e.current
	e.mu.Unlock()
	if w == nil {
		return nil
	}
	return w.Ready(ctx)
}
