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

// ReplicaWatch keeps ingest not-ready while the usage topic has partitions with fewer in-sync
// replicas than its min.insync.replicas. Kafka refuses every acks=all write to those (and ingest
// answers 503 for the events keyed there), so the truth for a load balancer or an operator is
// "not ready", not a 503 now and then. A check that cannot reach Kafka changes nothing: the
// publish breaker already reports a Kafka that does not acknowledge.
type ReplicaWatch struct {
	cfg      ReplicaWatchConfig
	log      *slog.Logger
	short    prometheus.Gauge
	failures prometheus.Counter

	mu  sync.Mutex
	err error // from the last check that got an answer
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
			Help: "Partitions of the usage topic with fewer in-sync replicas than min.insync.replicas at the last check (ingest is not ready while above 0)."}),
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
		now = fmt.Errorf("usage topic %s: partitions %s are below min.insync.replicas=%d; Kafka refuses writes to them until a broker returns and catches up",
			w.cfg.Topic, strings.Join(parts, ", "), r.MinInSync)
	}
	w.mu.Lock()
	was := w.err
	w.err = now
	w.mu.Unlock()
	switch {
	case now != nil && (was == nil || was.Error() != now.Error()):
		w.log.Error("ingest not ready: "+now.Error(), "topic", w.cfg.Topic, "partitions_short", len(r.Short))
	case now == nil && was != nil:
		w.log.Info("ingest: every usage partition has min.insync.replicas in sync again; ready", "topic", w.cfg.Topic)
	}
}

// Ready is the last check's verdict; a readiness check.
func (w *ReplicaWatch) Ready(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
