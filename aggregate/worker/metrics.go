package worker

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the aggregator.
type Metrics struct {
	Records           prometheus.Counter
	Errors            prometheus.Counter
	Freshness         prometheus.Histogram
	CheckpointSeconds prometheus.Histogram
	FullCheckpoints   prometheus.Counter
	Lag               *prometheus.GaugeVec
	Lost              *prometheus.CounterVec
	Differences       *prometheus.GaugeVec
	Misrouted         *prometheus.CounterVec
	TotalsWithheld    prometheus.Counter
}

// NewMetrics registers the aggregator metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Records: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregate_records_total", Help: "Usage records folded (including retries dropped and invalid ones)."}),
		Errors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregate_partition_errors_total", Help: "Partition failures (each retried from its checkpoint)."}),
		Freshness: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_aggregate_freshness_seconds",
			Help: "From ingest's receive time to the record folded into the running totals.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		CheckpointSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_aggregate_checkpoint_seconds", Help: "Time to write one checkpoint.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		FullCheckpoints: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregate_full_checkpoints_total",
			Help: "Checkpoints that wrote every total of their partition, letting older rows go."}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_aggregate_consumer_lag", Help: "Records behind the end of the partition."}, []string{"partition"}),
		Differences: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_aggregate_reconcile_differences",
			Help: "(account, service) pairs whose running total differs from the exact recount, at the last periodic reconciliation."}, []string{"period"}),
	}
	m.Lost = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregate_records_lost_total",
		Help: "Usage records Kafka deleted before the aggregator read them (where: fold, or window for the dedup window rebuilt at a restart); alert on any."}, []string{"partition", "where"})
	m.Misrouted = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregate_misrouted_records_total",
		Help: "Usage records on a partition other than the one ingest routes their account to (a producer not partitioning by murmur2 of the account); their account-months are answered from the exact recount."}, []string{"partition"})
	m.TotalsWithheld = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregate_totals_withheld_total",
		Help: "Running totals not published on the totals topic because their account-month is misrouted (a partial total)."})
	reg.MustRegister(m.Misrouted, m.TotalsWithheld, m.Records, m.Errors, m.Freshness, m.CheckpointSeconds, m.FullCheckpoints, m.Lag, m.Differences, m.Lost)
	return m
}
