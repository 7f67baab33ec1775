package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/settle"
)

// Entry is one line of the settle worker's log.
type Entry struct {
	Line []byte
	// Source is "topic/partition" and Offset the offset of a journalled input (empty for usage
	// and ticks).
	Source     string
	Offset     int64
	RecordedAt time.Time
	// Tick: a settlement instant; Covered is the usage offsets it and the ticks before it cover.
	Tick    bool
	Covered Offsets
}

// Journal walks the settle worker's log in order: each journalled input, and before each tick the
// usage records the tick covers that the previous one did not.
func Journal(ctx context.Context, brokers []string, topic string, ch driver.Conn, fn func(Entry) error) error {
	covered := Offsets{}
	return ReadAll(ctx, brokers, topic, func(m kafka.Message) error {
		ev, err := cloudevent.Decode(m.Value)
		if err != nil {
			return fmt.Errorf("journal offset %d is not a CloudEvent: %w", m.Offset, err)
		}
		if ev.Type == settle.ClockTickType {
			var d struct {
				Offsets map[string]int64 `json:"offsets"`
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return fmt.Errorf("journal tick at offset %d: %w", m.Offset, err)
			}
			to := Offsets{}
			for p, o := range d.Offsets {
				n, err := strconv.ParseInt(p, 10, 32)
				if err != nil {
					return fmt.Errorf("journal tick at offset %d: partition %q", m.Offset, p)
				}
				to[int32(n)] = o
			}
			if err := usageLines(ctx, ch, covered, to, func(line []byte) error { return fn(Entry{Line: line}) }); err != nil {
				return err
			}
			covered = to
			return fn(Entry{Line: m.Value, RecordedAt: ev.Time, Tick: true, Covered: to})
		}
		e := Entry{Line: m.Value, RecordedAt: ev.RecordedAt}
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if t := h["tally-source-topic"]; t != "" {
			e.Source = t + "/" + h["tally-source-partition"]
			e.Offset, _ = strconv.ParseInt(h["tally-source-offset"], 10, 64)
		}
		return fn(e)
	})
}

// Export writes the settle worker's log as JSON lines: `tally replay` over it reproduces what the
// worker emitted.
func Export(ctx context.Context, brokers []string, topic string, ch driver.Conn, out io.Writer) (int, error) {
	n := 0
	err := Journal(ctx, brokers, topic, ch, func(e Entry) error {
		n++
		if _, err := out.Write(e.Line); err != nil {
			return err
		}
		_, err := out.Write([]byte("\n"))
		return err
	})
	return n, err
}

func partitions(ctx context.Context, brokers []string, topic string) ([]int, error) {
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

// ReadAll reads every partition of topic from the start to its current end, partition by
// partition (the journal has one partition, so that is its order).
func ReadAll(ctx context.Context, brokers []string, topic string, fn func(kafka.Message) error) error {
	parts, err := partitions(ctx, brokers, topic)
	if err != nil {
		return err
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	for _, p := range parts {
		resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p)}}})
		if err != nil {
			return fmt.Errorf("offsets of %s/%d: %w", topic, p, err)
		}
		first, end := resp.Topics[topic][0].FirstOffset, resp.Topics[topic][0].LastOffset
		if end <= first {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond, MaxBytes: 16 << 20})
		if err := r.SetOffset(first); err != nil {
			r.Close()
			return err
		}
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				r.Close()
				return fmt.Errorf("read %s/%d: %w", topic, p, err)
			}
			if err := fn(m); err != nil {
				r.Close()
				return err
			}
			if m.Offset >= end-1 {
				break
			}
		}
		r.Close()
	}
	return nil
}
