package ingest

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-billing/tally/internal/cloudevent"
)

// Metrics of the ingest API.
type Metrics struct {
	Accepted        prometheus.Counter
	Rejected        *prometheus.CounterVec
	Failed          *prometheus.CounterVec
	PublishFailures prometheus.Counter
	Abandoned       prometheus.Counter
	Shed            *prometheus.CounterVec
	ProduceSeconds  prometheus.Histogram
	RequestSeconds  prometheus.Histogram
	BatchSize       prometheus.Histogram
}

// NewMetrics registers the ingest metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_ingest_events_accepted_total", Help: "Usage events accepted and durable in Kafka."}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_ingest_events_rejected_total", Help: "Usage events rejected, by the field at fault."}, []string{"reason"}),
		Failed:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_ingest_requests_failed_total", Help: "Requests refused whole, by HTTP status."}, []string{"status"}),
		PublishFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_ingest_publish_failures_total",
			Help: "Requests answered 503 because Kafka did not acknowledge."}),
		Abandoned: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_ingest_requests_abandoned_total",
			Help: "Requests whose client went away before Kafka acknowledged; not counted as Kafka failures."}),
		ProduceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_ingest_produce_seconds", Help: "Time for Kafka to acknowledge a request's events.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		RequestSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_ingest_request_seconds", Help: "Time to answer POST /v1/events.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_ingest_batch_events", Help: "Events per request.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
	}
	m.Shed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_ingest_requests_shed_total",
		Help: "Requests answered 503 at once, without waiting on Kafka (kafka_down: after a failed publish; in_flight: too many waiting)."}, []string{"reason"})
	reg.MustRegister(m.Shed, m.Accepted, m.Rejected, m.Failed, m.PublishFailures, m.Abandoned, m.ProduceSeconds, m.RequestSeconds, m.BatchSize)
	return m
}

func (m *Metrics) rejected(err error) {
	var ce *cloudevent.Error
	code := "invalid"
	if errors.As(err, &ce) && ce.Code != "" {
		code = ce.Code
	}
	m.Rejected.WithLabelValues(code).Inc()
}
