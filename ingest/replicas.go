package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-billing/tally/internal/kafkax"
)

// ReplicaWatch watches the usage topic for partitions with fewer in-sync replicas than its
// min.insync.replicas. Kafka refuses every acks=all write to those, and ingest answers 503
// (Retry-After) for the events keyed there. While some partitions still take writes, ingest stays
// ready: every instance writes to the same partitions, so a red readiness would take all of them
// out of the load balancer and refuse the healthy accounts too; the shortage is loud instead (an
// error log per change, tally_ingest_usage_partitions_under_min_isr, the TallyUsageUnderReplicated
// alert). When no partition takes writes, ingest is not ready. A check that cannot reach Kafka
// changes nothing: the publish breaker already reports a Kafka that does not acknowledge.
type ReplicaWatch struct {
	cfg      ReplicaWatchConfig
	log      *slog.Logger
	short    prometheus.Gauge
	failures prometheus.Counter

	mu       sync.Mutex
	shortage error // the shortage the last check that got an answer found
	blocked  bool  // and no partition took writes
}

// ReplicaWatchConfig says what to watch and how often.
type ReplicaWatchConfig struct {
	Brokers  []string
	Security kafkax.Security
	Topic    string
	Interval time.Duration
	// Describe is kafkax.DescribeReplication; a test may put another in its place.
	Describe func(ctx context.Context, c kafkax.Cluster, topic string) (kafkax.Replication, error)
}

// NewReplicaWatch registers its metrics on reg; Run does the checking.
func NewReplicaWatch(cfg ReplicaWatchConfig, log *slog.Logger, reg prometheus.Registerer) (*ReplicaWatch, error) {
	if len(cfg.Brokers) == 0 || cfg.Topic == "" || cfg.Interval <= 0 {
		return nil, fmt.Errorf("replica watch: brokers, topic and a positive interval are required")
	}
	if cfg.Describe == nil {
		cfg.Describe = kafkax.DescribeReplication
	}
	w := &ReplicaWatch{cfg: cfg, log: log,
		short: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_ingest_usage_partitions_under_min_isr",
			Help: "Partitions of the usage topic with fewer in-sync replicas than min.insync.replicas at the last check (ingest answers 503 for the events keyed there; not ready when every partition is)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_ingest_replica_checks_failed_total",
			Help: "Checks of the usage topic's in-sync replicas that got no answer from Kafka."}),
	}
	reg.MustRegister(w.short, w.failures)
	return w, nil
}

// Run checks at once and then every Interval until ctx ends.
func (w *ReplicaWatch) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		w.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check asks Kafka once and updates readiness, the gauge and the log (on a change).
func (w *ReplicaWatch) Check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := w.cfg.Describe(ctx, kafkax.Cluster{Brokers: w.cfg.Brokers, Security: w.cfg.Security}, w.cfg.Topic)
	if err != nil {
		if ctx.Err() == nil || ctx.Err() == context.DeadlineExceeded {
			w.failures.Inc()
			w.log.Warn("ingest: could not check the usage topic's in-sync replicas; readiness unchanged", "topic", w.cfg.Topic, "err", err)
		}
		return
	}
	w.short.Set(float64(len(r.Short)))
	var now error
	if len(r.Short) > 0 {
		parts := make([]string, len(r.Short))
		for i, p := range r.Short {
			parts[i] = fmt.Sprintf("%d (%d of %d in sync)", p.Partition, p.InSync, p.Replicas)
		}
		now = fmt.Errorf("usage topic %s: partitions %s of %d are below min.insync.replicas=%d; Kafka refuses writes to them until a broker returns and catches up (their accounts get 503)",
			w.cfg.Topic, strings.Join(parts, ", "), r.Partitions, r.MinInSync)
	}
	w.mu.Lock()
	was := w.shortage
	w.shortage = now
	w.blocked = now != nil && len(r.Short) >= r.Partitions
	w.mu.Unlock()
	switch {
	case now != nil && (was == nil || was.Error() != now.Error()):
		w.log.Error("ingest: "+now.Error(), "topic", w.cfg.Topic, "partitions_short", len(r.Short), "partitions", r.Partitions)
	case now == nil && was != nil:
		w.log.Info("ingest: every usage partition has min.insync.replicas in sync again", "topic", w.cfg.Topic)
	}
}

// Ready is the last check's verdict, a readiness check: not ready when no usage partition takes
// writes.
func (w *ReplicaWatch) Ready(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.blocked {
		return w.shortage
	}
	return nil
}

// Degraded is the last check's shortage (nil: none), whether or not it makes ingest not ready.
func (w *ReplicaWatch) Degraded() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.shortage
}
