package sink

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the sink.
type Metrics struct {
	Rows          prometheus.Counter
	DeadLetters   *prometheus.CounterVec
	Errors        prometheus.Counter
	InsertSeconds prometheus.Histogram
	BatchRows     prometheus.Histogram
	Lag           *prometheus.GaugeVec
	Gaps          *prometheus.CounterVec
	UnwrittenAge  *prometheus.GaugeVec
	Retention     prometheus.Gauge
	Stopped       *prometheus.GaugeVec
}

// NewMetrics registers the sink metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Rows:        prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_sink_rows_total", Help: "Usage rows inserted into ClickHouse."}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_sink_dead_letters_total", Help: "Records sent to the dead-letter topic, by the field at fault."}, []string{"reason"}),
		Errors:      prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_sink_partition_errors_total", Help: "Partition failures (each retried from recorded progress)."}),
		InsertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_sink_insert_seconds", Help: "Time of one ClickHouse batch insert.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		BatchRows: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_sink_batch_records", Help: "Records per written batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_sink_consumer_lag", Help: "Records behind the end of the partition."}, []string{"partition"}),
	}
	m.Gaps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_sink_gaps_total",
		Help: "Partitions stopped because records would be lost (reason: deleted_before_read, progress_past_end)."}, []string{"reason"})
	m.Stopped = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_sink_partition_stopped_records",
		Help: "Records at risk in a partition stopped on a gap (0: running); alert on > 0. See `tally gaps`."}, []string{"partition", "reason"})
	m.UnwrittenAge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_sink_unwritten_age_seconds",
		Help: "Age of the oldest record of the partition the sink has read but not written yet (0: caught up). Alert when it nears tally_sink_topic_retention_seconds."}, []string{"partition"})
	m.Retention = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_sink_topic_retention_seconds",
		Help: "retention.ms of the usage topic (-1: infinite), read at start: records older than this are deleted, written or not."})
	reg.MustRegister(m.UnwrittenAge, m.Retention, m.Rows, m.DeadLetters, m.Errors, m.InsertSeconds, m.BatchRows, m.Lag, m.Gaps, m.Stopped)
	return m
}
