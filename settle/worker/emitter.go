package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
)

// EmitterConfig says where the settle worker's output goes and how much of it is buffered.
type EmitterConfig struct {
	Brokers []string
	// Security is how connections to Kafka are made (SASL, TLS); zero: plaintext.
	Security                  kafkax.Security
	BillingTopic, StatusTopic string
	// MaxBuffered events are held before a flush is forced (memory bound of a settlement's
	// output); flushes also happen at every point the worker needs its output on the topics.
	MaxBuffered int
	// ChunkBytes bounds one produce request: one chunk per partition is in flight at a time, so
	// a chunk that fails stops its partition and nothing after it is written (no reordering, no gap).
	// It must stay under the broker's max.message.bytes (1 MiB by default).
	ChunkBytes int
}

// Validate reports each problem with its field.
func (c EmitterConfig) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("emitter: Brokers is empty"))
	}
	if c.BillingTopic == "" {
		errs = append(errs, errors.New("emitter: BillingTopic is empty"))
	}
	if c.StatusTopic == "" {
		errs = append(errs, errors.New("emitter: StatusTopic is empty"))
	}
	if c.MaxBuffered <= 0 {
		errs = append(errs, fmt.Errorf("emitter: MaxBuffered %d must be positive", c.MaxBuffered))
	}
	if c.ChunkBytes < 1024 || c.ChunkBytes > 1<<20 {
		errs = append(errs, fmt.Errorf("emitter: ChunkBytes %d must lie in [1 KiB, 1 MiB]", c.ChunkBytes))
	}
	return errors.Join(errs...)
}

// DefaultEmitterConfig: 50,000 events buffered (a few tens of MB), 512 KiB chunks.
func DefaultEmitterConfig(cluster kafkax.Cluster, billing, status string) EmitterConfig {
	return EmitterConfig{Brokers: cluster.Brokers, Security: cluster.Security, BillingTopic: billing, StatusTopic: status, MaxBuffered: 50_000, ChunkBytes: 512 << 10}
}

// Emitter writes the billing core's output events in large ordered batches. SPEC §3 asks the
// events of one account to reach the ledger in the order the engine emitted them: every event
// is keyed by its account, so one key maps to one partition (murmur2, as every Kafka client
// partitions), and each partition's events are written in emission order, one produce request
// in flight per partition. Account status changes are written to the status topic as well, and
// a flush writes all of the status topic's share before any of the billing topic's, so the
// billing topic never says more than the status topic.
//
// Nothing is written until Flush (or a full buffer): a crash loses only unwritten output, which
// the restarted worker re-derives from its journal.
type Emitter struct {
	cfg             EmitterConfig
	billing, status *topicWriter
	buffered        int
	types           map[string]int // emitted types in the buffer, for the metric after a flush
	onWritten       func(typ string, n int)
	failed          error // the first failed flush's: nothing is accepted after it
}

// NewEmitter builds an emitter; onWritten is told, after each flush, how many events of each
// type reached the billing topic.
func NewEmitter(cfg EmitterConfig, onWritten func(typ string, n int)) (*Emitter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if onWritten == nil {
		onWritten = func(string, int) {}
	}
	cluster := kafkax.Cluster{Brokers: cfg.Brokers, Security: cfg.Security}
	return &Emitter{cfg: cfg, types: map[string]int{}, onWritten: onWritten,
		billing: newTopicWriter(cluster, cfg.BillingTopic, cfg.ChunkBytes),
		status:  newTopicWriter(cluster, cfg.StatusTopic, cfg.ChunkBytes)}, nil
}

// Add buffers one event; when the buffer is full it flushes with ctx.
func (e *Emitter) Add(ctx context.Context, o cloudevent.Out) error {
	if e.failed != nil {
		return e.failed
	}
	raw, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encode %s: %w", o.ID, err)
	}
	m := kafka.Message{Key: []byte(o.Subject), Value: raw, Headers: kafkax.CloudEventHeaders()}
	if o.Type == contract.AccountSuspendedType || o.Type == contract.AccountResumedType {
		e.status.add(m)
	}
	e.billing.add(m)
	e.types[o.Type]++
	e.buffered++
	if e.buffered >= e.cfg.MaxBuffered {
		return e.Flush(ctx)
	}
	return nil
}

// Buffered is the number of events not written yet.
func (e *Emitter) Buffered() int { return e.buffered }

// Flush writes every buffered event: the status topic's, then the billing topic's.
//
// A failed flush leaves each partition holding a prefix of its events, but which prefix is known
// only later: kafka-go keeps writing a produce request whose caller gave up (Close waits for it).
// So the emitter refuses all work after a failure, and the caller stops; the next start reads the
// billing topic and re-derives only what is not on it.
func (e *Emitter) Flush(ctx context.Context) error {
	if e.failed != nil {
		return e.failed
	}
	if e.buffered == 0 {
		return nil
	}
	if err := e.status.flush(ctx); err != nil {
		e.failed = fmt.Errorf("write account status (the emitter stopped; restart to resume): %w", err)
		return e.failed
	}
	if err := e.billing.flush(ctx); err != nil {
		e.failed = fmt.Errorf("write billing events (the emitter stopped; restart to resume): %w", err)
		return e.failed
	}
	for typ, n := range e.types {
		e.onWritten(typ, n)
	}
	clear(e.types)
	e.buffered = 0
	return nil
}

// Close waits for produce requests in flight and releases the writers; buffered events are
// dropped (call Flush first to keep them).
func (e *Emitter) Close() error {
	return errors.Join(e.billing.close(), e.status.close())
}

// chunkMessages bounds the records of one chunk.
const chunkMessages = 4096

// topicWriter holds one topic's buffered messages by partition.
type topicWriter struct {
	cluster    kafkax.Cluster
	topic      string
	chunkBytes int
	w          *kafka.Writer
	partitions []int
	pending    []kafka.Message // until the partitions are known
	byPart     map[int][]kafka.Message
}

func newTopicWriter(cluster kafkax.Cluster, topic string, chunkBytes int) *topicWriter {
	return &topicWriter{cluster: cluster, topic: topic, chunkBytes: chunkBytes, byPart: map[int][]kafka.Message{},
		w: &kafka.Writer{Addr: kafka.TCP(cluster.Brokers...), Transport: cluster.Security.RoundTripper(), Topic: topic, Balancer: partitionChosen{}, RequiredAcks: kafka.RequireAll,
			// One chunk is one produce request: the writer must not split it (a failed first half
			// would be followed by a written second half) nor hold it back waiting for more. The
			// writer allocates BatchSize messages for every batch, so it is the chunk's count bound,
			// not a large number.
			BatchSize: chunkMessages, BatchBytes: int64(chunkBytes) * 2, BatchTimeout: time.Millisecond}}
}

func (t *topicWriter) add(m kafka.Message) { t.pending = append(t.pending, m) }

// assign places the pending messages on their partitions (murmur2 of the key, like ingest and
// every Kafka client), learning the partitions once.
func (t *topicWriter) assign(ctx context.Context) error {
	if len(t.pending) == 0 {
		return nil
	}
	if t.partitions == nil {
		parts, err := kafkax.Partitions(ctx, t.cluster, t.topic)
		if err != nil {
			return err
		}
		if len(parts) == 0 {
			return fmt.Errorf("topic %s has no partitions (run tally migrate)", t.topic)
		}
		t.partitions = parts
	}
	var murmur kafka.Murmur2Balancer
	for _, m := range t.pending {
		p := murmur.Balance(m, t.partitions...)
		t.byPart[p] = append(t.byPart[p], m)
	}
	clear(t.pending) // drop the payloads: the partition lists hold them until written
	t.pending = t.pending[:0]
	return nil
}

func (t *topicWriter) flush(ctx context.Context) error {
	if err := t.assign(ctx); err != nil {
		return err
	}
	if len(t.byPart) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(t.byPart))
	for p, msgs := range t.byPart {
		go func() {
			err := t.writePartition(ctx, p, msgs)
			if err != nil {
				cancel() // the others stop after their chunk in flight
				err = fmt.Errorf("%s partition %d: %w", t.topic, p, err)
			}
			errs <- err
		}()
	}
	var all []error
	for range len(t.byPart) {
		all = append(all, <-errs)
	}
	clear(t.byPart)
	return errors.Join(all...)
}

// writePartition writes msgs to partition p in order, one chunk at a time.
func (t *topicWriter) writePartition(ctx context.Context, p int, msgs []kafka.Message) error {
	written := 0
	for written < len(msgs) {
		end, size := written, 0
		for end < len(msgs) {
			n := len(msgs[end].Key) + len(msgs[end].Value) + 64 // record overhead, generously
			if end > written && (size+n > t.chunkBytes || end-written == chunkMessages) {
				break
			}
			msgs[end].Partition = p
			size += n
			end++
		}
		if err := t.w.WriteMessages(ctx, msgs[written:end]...); err != nil {
			return err
		}
		written = end
	}
	return nil
}

func (t *topicWriter) close() error { return t.w.Close() }

// partitionChosen sends a message to the partition already set on it (the emitter chose it).
type partitionChosen struct{}

func (partitionChosen) Balance(m kafka.Message, partitions ...int) int { return m.Partition }
