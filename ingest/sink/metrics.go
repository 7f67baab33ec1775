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
	reg.MustRegister(m.Rows, m.DeadLetters, m.Errors, m.InsertSeconds, m.BatchRows, m.Lag)
	return m
}
