// Package producer writes usage events to the Kafka usage topic with segmentio/kafka-go: Writer is
// the durable publisher behind the HTTP ingest API, and Producer is the client for gateways that
// produce straight to Kafka (same validation, account as the key, batching, compression).
package producer

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
)

// Config of a Writer.
type Config struct {
	Brokers []string
	// SASL and TLS secure every connection to Kafka (nil: none; kafka-go's sasl/plain and
	// sasl/scram build mechanisms).
	SASL  sasl.Mechanism
	TLS   *tls.Config
	Topic string
	// BatchSize and BatchTimeout: records are sent when a batch is full or has waited this long.
	BatchSize    int
	BatchTimeout time.Duration
	// Compression: "none", "gzip", "snappy", "lz4" or "zstd".
	Compression string
	// WriteTimeout bounds one write to a broker.
	WriteTimeout time.Duration
}

// DefaultConfig is tuned for the ingest API: small waits, since every request waits for its acks.
func DefaultConfig(brokers []string, topic string) Config {
	return Config{Brokers: brokers, Topic: topic, BatchSize: 1000, BatchTimeout: 2 * time.Millisecond, Compression: "lz4", WriteTimeout: 10 * time.Second}
}

var codecs = map[string]compress.Compression{"none": 0, "gzip": compress.Gzip, "snappy": compress.Snappy, "lz4": compress.Lz4, "zstd": compress.Zstd}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("producer: no Kafka brokers"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("producer: topic is empty"))
	}
	if c.BatchSize <= 0 || c.BatchTimeout <= 0 || c.WriteTimeout <= 0 {
		errs = append(errs, errors.New("producer: batch size, batch timeout and write timeout must be positive"))
	}
	if _, ok := codecs[c.Compression]; !ok {
		errs = append(errs, fmt.Errorf("producer: compression %q: want none, gzip, snappy, lz4 or zstd", c.Compression))
	}
	return errors.Join(errs...)
}

// Writer publishes records durably: a write returns after all in-sync replicas acknowledged.
type Writer struct {
	w *kafka.Writer
}

// NewWriter builds a Writer. Keys are partitioned with murmur2, as the Java client does, so an
// account's events land in one partition whichever client produced them.
func NewWriter(cfg Config) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Writer{w: &kafka.Writer{
		Addr:                   kafka.TCP(cfg.Brokers...),
		Transport:              kafkax.Security{SASL: cfg.SASL, TLS: cfg.TLS}.RoundTripper(),
		Topic:                  cfg.Topic,
		Balancer:               &kafka.Murmur2Balancer{},
		RequiredAcks:           kafka.RequireAll,
		BatchSize:              cfg.BatchSize,
		BatchBytes:             16 << 20,
		BatchTimeout:           cfg.BatchTimeout,
		WriteTimeout:           cfg.WriteTimeout,
		Compression:            codecs[cfg.Compression],
		MaxAttempts:            5,
		AllowAutoTopicCreation: false,
	}}, nil
}

// Publish implements ingest.Publisher.
func (w *Writer) Publish(ctx context.Context, records []ingest.Record) error {
	msgs := make([]kafka.Message, len(records))
	for i, r := range records {
		msgs[i] = kafka.Message{Key: r.Key, Value: r.Value, Time: r.Time}
	}
	if err := w.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("write %d records to %s: %w", len(msgs), w.w.Topic, err)
	}
	return nil
}

// Close flushes and closes the writer.
func (w *Writer) Close() error { return w.w.Close() }

// Producer is the client for gateways that produce usage straight to Kafka.
type Producer struct {
	w        *Writer
	services contract.ServiceChecker
	source   string
	now      func() time.Time
}

// New builds a Producer; source names the gateway in the CloudEvents it writes, services is the
// price catalogue (settle.DefaultCatalogue() or the one the platform runs).
func New(cfg Config, source string, services contract.ServiceChecker) (*Producer, error) {
	if source == "" {
		return nil, errors.New("producer: source (the gateway's name) is empty")
	}
	w, err := NewWriter(cfg)
	if err != nil {
		return nil, err
	}
	return &Producer{w: w, services: services, source: source, now: time.Now}, nil
}

type usageData struct {
	Account string `json:"account"`
	Service string `json:"service"`
	Calls   int64  `json:"calls"`
}

type usageEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Time            string    `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            usageData `json:"data"`
}

// Send validates the usage events with the ingest API's rules and writes them, returning after
// Kafka acknowledged all of them. An invalid event fails the whole call before anything is
// written, with the index and reason. Retrying a failed Send is safe: ids make it idempotent.
func (p *Producer) Send(ctx context.Context, usage ...contract.Usage) error {
	now := p.now()
	records := make([]ingest.Record, 0, len(usage))
	for i, u := range usage {
		raw, err := json.Marshal(usageEvent{
			SpecVersion: cloudevent.SpecVersion, ID: u.ID, Source: p.source, Type: contract.UsageType,
			Time: cloudevent.FormatTime(u.Time), DataContentType: "application/json",
			Data: usageData{Account: u.Account, Service: u.Service, Calls: u.Calls},
		})
		if err != nil {
			return fmt.Errorf("usage %d: %w", i, err)
		}
		ev, err := cloudevent.Decode(raw)
		if err == nil {
			_, err = contract.ParseUsage(ev, now, p.services)
		}
		if err != nil {
			return fmt.Errorf("usage %d (id %q): %w", i, u.ID, err)
		}
		records = append(records, ingest.Record{Key: []byte(u.Account), Value: raw, Time: now})
	}
	return p.w.Publish(ctx, records)
}

// Close flushes and closes the producer.
func (p *Producer) Close() error { return p.w.Close() }
