package kafkax

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// Partitions lists the partition ids of topic.
func Partitions(ctx context.Context, brokers []string, topic string) ([]int, error) {
	if len(brokers) == 0 {
		return nil, errors.New("kafka: no brokers configured")
	}
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
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
func ReadAll(ctx context.Context, brokers []string, topic string, fn func(kafka.Message) error) error {
	parts, err := Partitions(ctx, brokers, topic)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := ReadPartitionFrom(ctx, brokers, topic, p, 0, fn); err != nil {
			return err
		}
	}
	return nil
}

// ReadPartitionFrom reads one partition of topic from offset from (or its first offset, if
// later) to its end as of the call, then returns.
func ReadPartitionFrom(ctx context.Context, brokers []string, topic string, partition int, from int64, fn func(kafka.Message) error) error {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.FirstOffsetOf(partition), kafka.LastOffsetOf(partition)}}})
	if err != nil {
		return fmt.Errorf("offsets of %s/%d: %w", topic, partition, err)
	}
	first, end := resp.Topics[topic][0].FirstOffset, resp.Topics[topic][0].LastOffset
	if first > from {
		from = first
	}
	if end <= from {
		return nil
	}
	return readRange(ctx, brokers, topic, partition, from, end, fn)
}

// EndOffsets are the offsets after the last record of each partition of topic.
func EndOffsets(ctx context.Context, brokers []string, topic string) (map[int]int64, error) {
	parts, err := Partitions(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	var reqs []kafka.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
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

func readRange(ctx context.Context, brokers []string, topic string, p int, first, end int64, fn func(kafka.Message) error) error {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond, MaxBytes: 16 << 20})
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

// Follow reads every partition of topic from the start and keeps following it until ctx ends,
// calling fn (from one goroutine per partition) for each record. caughtUp, when not nil, is
// called once, when every partition has been read up to its end as of the call (so a follower
// can tell it holds the whole topic). It returns the first read error.
func Follow(ctx context.Context, brokers []string, topic string, fn func(kafka.Message), caughtUp func()) error {
	parts, err := Partitions(ctx, brokers, topic)
	if err != nil {
		return err
	}
	var behind atomic.Int64
	behind.Store(int64(len(parts)))
	done := func() {
		if behind.Add(-1) == 0 && caughtUp != nil {
			caughtUp()
		}
	}
	if len(parts) == 0 && caughtUp != nil {
		caughtUp()
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(parts))
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 200 * time.Millisecond})
			defer r.Close()
			if err := r.SetOffset(kafka.FirstOffset); err != nil {
				errc <- err
				return
			}
			end, err := r.ReadLag(ctx) // from the first offset: the records up to the end
			if err != nil {
				errc <- fmt.Errorf("follow %s/%d: end offset: %w", topic, p, err)
				return
			}
			caught := end == 0
			if caught {
				done()
			}
			for {
				rctx, cancel := context.WithTimeout(ctx, time.Second)
				m, err := r.ReadMessage(rctx)
				cancel()
				switch {
				case ctx.Err() != nil:
					return
				case err == nil:
					fn(m)
				case !errors.Is(err, context.DeadlineExceeded):
					errc <- fmt.Errorf("follow %s/%d: %w", topic, p, err)
					return
				}
				// Idle or not, the partition is caught up once nothing is left to read (offsets
				// compacted away at the end included).
				if !caught && (err != nil || r.Lag() == 0) {
					if lag, lerr := r.ReadLag(ctx); lerr == nil && lag == 0 {
						caught = true
						done()
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// PartitionBounds are the offset of the first record still in partition p of topic (the log
// start: retention and deleted records move it) and the offset after its last record.
func PartitionBounds(ctx context.Context, brokers []string, topic string, p int) (first, end int64, err error) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
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
