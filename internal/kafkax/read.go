package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// Partitions lists the partition ids of topic.
func Partitions(ctx context.Context, c Cluster, topic string) ([]int, error) {
	if len(c.Brokers) == 0 {
		return nil, errors.New("kafka: no brokers configured")
	}
	conn, err := c.Security.Dialer().DialContext(ctx, "tcp", c.Brokers[0])
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ps, err := conn.ReadPartitions(topic)
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out, nil
}

// ReadAll reads every partition of topic from its start to its end as of the call, partition by
// partition (a one-partition topic is read in log order), then returns.
func ReadAll(ctx context.Context, c Cluster, topic string, fn func(kafka.Message) error) error {
	parts, err := Partitions(ctx, c, topic)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := ReadPartitionFrom(ctx, c, topic, p, kafka.FirstOffset, fn); err != nil {
			return err
		}
	}
	return nil
}

// ReadPartitionFrom reads one partition of topic from offset from (kafka.FirstOffset: from the
// first record still there) to its end as of the call, then returns. When records at or after
// from are gone (retention or an admin deleted them), it reads nothing and returns a
// *DeletedError: a caller resuming from stored progress must not skip them unknowingly.
func ReadPartitionFrom(ctx context.Context, c Cluster, topic string, partition int, from int64, fn func(kafka.Message) error) error {
	first, end, err := PartitionBounds(ctx, c, topic, partition)
	if err != nil {
		return err
	}
	if from == kafka.FirstOffset {
		from = first
	}
	if first > from {
		return &DeletedError{Topic: topic, Partition: partition, From: from, First: first}
	}
	if end <= from {
		return nil
	}
	return readRange(ctx, c, topic, partition, from, end, fn)
}

// DeletedError: records [From, First) of a partition were to be read and are gone from Kafka.
type DeletedError struct {
	Topic       string
	Partition   int
	From, First int64
}

func (e *DeletedError) Error() string {
	return fmt.Sprintf("records [%d, %d) of %s/%d are gone from Kafka (retention or an admin deleted them) and were never read here",
		e.From, e.First, e.Topic, e.Partition)
}

// EndOffsets are the offsets after the last record of each partition of topic.
func EndOffsets(ctx context.Context, c Cluster, topic string) (map[int]int64, error) {
	parts, err := Partitions(ctx, c, topic)
	if err != nil {
		return nil, err
	}
	var reqs []kafka.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	client := c.Client(10 * time.Second)
	resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	out := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("end offset of %s/%d: %w", topic, po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
	}
	return out, nil
}

func readRange(ctx context.Context, c Cluster, topic string, p int, first, end int64, fn func(kafka.Message) error) error {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.Brokers, Dialer: c.Security.Dialer(), Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond, MaxBytes: 16 << 20})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return err
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("read %s/%d: %w", topic, p, err)
		}
		if err := fn(m); err != nil {
			return err
		}
		if m.Offset >= end-1 {
			return nil
		}
	}
}

// FollowConfig says what Follow reads and whom it tells.
type FollowConfig struct {
	Brokers  []string
	Security Security
	Topic    string
	// CaughtUp, when not nil, is called once, when every partition has been read up to its end
	// as of the start (so a follower can tell it holds the whole topic).
	CaughtUp func()
	// Failing, when not nil, is called with the read error when reading starts failing, and with
	// nil when it works again: a readiness check can follow it.
	Failing func(error)
	Log     *slog.Logger
}

// followBackoff bounds the wait between two attempts after a read error.
const followBackoffMax = 30 * time.Second

// Follow reads every partition of the topic from the start and keeps following it until ctx
// ends, calling fn (from one goroutine per partition) for each record in partition order. A
// read error (a broker restart, a leader moving, Kafka down for an hour) never stops it: the
// partition is read again from the record after the last one handed to fn, with a backoff, and
// the error is logged once per failing spell and passed to Failing. It returns nil when ctx ends.
func Follow(ctx context.Context, cfg FollowConfig, fn func(kafka.Message)) error {
	f := &follower{cfg: cfg}
	var parts []int
	for attempt := 0; ; attempt++ {
		var err error
		if parts, err = Partitions(ctx, Cluster{cfg.Brokers, cfg.Security}, cfg.Topic); err == nil {
			f.ok()
			break
		}
		f.failed(-1, err)
		if !sleepCtx(ctx, backoff(attempt)) {
			return nil
		}
	}
	var behind atomic.Int64
	behind.Store(int64(len(parts)))
	done := func() {
		if behind.Add(-1) == 0 && cfg.CaughtUp != nil {
			cfg.CaughtUp()
		}
	}
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Go(func() {
			next, caught := kafka.FirstOffset, false
			for attempt := 0; ctx.Err() == nil; attempt++ {
				err := f.partition(ctx, p, &next, &caught, done, fn)
				if ctx.Err() != nil {
					return
				}
				f.failed(p, err)
				if !sleepCtx(ctx, backoff(attempt)) {
					return
				}
			}
		})
	}
	wg.Wait()
	return nil
}

type follower struct {
	cfg     FollowConfig
	mu      sync.Mutex
	failing map[int]bool // partitions (-1: metadata) whose last read failed
}

func (f *follower) failed(p int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing == nil {
		f.failing = map[int]bool{}
	}
	first := len(f.failing) == 0
	if !f.failing[p] && f.cfg.Log != nil {
		f.cfg.Log.Warn("kafka: reading failed; retrying with backoff", "topic", f.cfg.Topic, "partition", p, "err", err)
	}
	f.failing[p] = true
	if first && f.cfg.Failing != nil {
		f.cfg.Failing(err)
	}
}

func (f *follower) ok(p ...int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := -1
	if len(p) > 0 {
		key = p[0]
	}
	if !f.failing[key] {
		return
	}
	delete(f.failing, key)
	if f.cfg.Log != nil {
		f.cfg.Log.Info("kafka: reading works again", "topic", f.cfg.Topic, "partition", key)
	}
	if len(f.failing) == 0 && f.cfg.Failing != nil {
		f.cfg.Failing(nil)
	}
}

// partition reads p from *next until ctx ends or a read fails, advancing *next past each record
// handed to fn.
func (f *follower) partition(ctx context.Context, p int, next *int64, caught *bool, done func(), fn func(kafka.Message)) error {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: f.cfg.Brokers, Dialer: f.cfg.Security.Dialer(), Topic: f.cfg.Topic, Partition: p, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(*next); err != nil {
		return err
	}
	if !*caught {
		lag, err := r.ReadLag(ctx) // from *next: the records up to the end
		if err != nil {
			return fmt.Errorf("follow %s/%d: end offset: %w", f.cfg.Topic, p, err)
		}
		if lag == 0 {
			*caught = true
			done()
		}
	}
	f.ok(p)
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		m, err := r.ReadMessage(rctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			fn(m)
			*next = m.Offset + 1
		case !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("follow %s/%d: %w", f.cfg.Topic, p, err)
		}
		// Idle or not, the partition is caught up once nothing is left to read (offsets
		// compacted away at the end included).
		if !*caught && (err != nil || r.Lag() == 0) {
			if lag, lerr := r.ReadLag(ctx); lerr == nil && lag == 0 {
				*caught = true
				done()
			}
		}
	}
}

func backoff(attempt int) time.Duration {
	d := time.Second << min(attempt, 5)
	return min(d, followBackoffMax)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// PartitionBounds are the offset of the first record still in partition p of topic (the log
// start: retention and deleted records move it) and the offset after its last record.
func PartitionBounds(ctx context.Context, c Cluster, topic string, p int) (first, end int64, err error) {
	client := c.Client(10 * time.Second)
	resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p)}}})
	if err != nil {
		return 0, 0, fmt.Errorf("offsets of %s/%d: %w", topic, p, err)
	}
	for _, po := range resp.Topics[topic] {
		if po.Partition != p {
			continue
		}
		if po.Error != nil {
			return 0, 0, fmt.Errorf("offsets of %s/%d: %w", topic, p, po.Error)
		}
		return po.FirstOffset, po.LastOffset, nil
	}
	return 0, 0, fmt.Errorf("offsets of %s/%d: the broker did not answer for the partition", topic, p)
}

// Continuity follows the offsets a reader hands over, one partition's, to tell a hole Kafka made
// from offsets the topic never had. kafka-go moves a reader past records Kafka deleted (retention,
// an admin) without a word (reader.go: initialize, and run's OffsetOutOfRange case), so a consumer
// resuming from stored progress would skip them unknowingly.
type Continuity struct {
	Brokers   []string
	Security  Security
	Topic     string
	Partition int
	// Next is the offset the next record must have (the stored progress at the start).
	Next int64
}

// Take records that the reader handed over m. It returns a *DeletedError when records between
// Next and m are gone from Kafka unread; offsets skipped for other reasons (transaction markers,
// compaction) are no error. Next moves past m either way.
func (c *Continuity) Take(ctx context.Context, m kafka.Message) error {
	from := c.Next
	c.Next = m.Offset + 1
	if m.Offset <= from {
		return nil
	}
	first, _, err := PartitionBounds(ctx, Cluster{c.Brokers, c.Security}, c.Topic, c.Partition)
	if err != nil {
		return err
	}
	if first > from { // records were there and are gone
		return &DeletedError{Topic: c.Topic, Partition: c.Partition, From: from, First: min(first, m.Offset)}
	}
	return nil
}

// Resume checks, before reading from c.Next, that no record at or after it is gone already.
func (c *Continuity) Resume(ctx context.Context) error {
	first, _, err := PartitionBounds(ctx, Cluster{c.Brokers, c.Security}, c.Topic, c.Partition)
	if err != nil {
		return err
	}
	if first > c.Next {
		return &DeletedError{Topic: c.Topic, Partition: c.Partition, From: c.Next, First: first}
	}
	return nil
}

// FetchBatch appends to batch what r delivers until batch holds max messages or wait has passed:
// the batching loop of the sinks. take sees each message first; an error from it ends the batch
// without that message and is returned with it. When ctx ends FetchBatch returns ctx's error and
// the caller drops the batch (it is read again from the recorded progress next time).
func FetchBatch(ctx context.Context, r *kafka.Reader, batch []kafka.Message, max int, wait time.Duration, take func(kafka.Message) error) ([]kafka.Message, error) {
	fctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for len(batch) < max {
		m, err := r.FetchMessage(fctx)
		if ctx.Err() != nil {
			return batch, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return batch, nil
		}
		if err != nil {
			return batch, fmt.Errorf("fetch partition %d: %w", r.Config().Partition, err)
		}
		if err := take(m); err != nil {
			return batch, err
		}
		batch = append(batch, m)
	}
	return batch, nil
}
