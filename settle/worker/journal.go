package worker

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/settle"
)

// Journal walks the settle worker's log in order: each journalled input, and before each tick the
// usage received since the previous one. fn gets the line, its source ("topic/partition", empty
// for usage and ticks), source offset, recordedat, and whether it is a tick.
func Journal(ctx context.Context, brokers []string, topic string, ch driver.Conn, fn func(line []byte, src string, off int64, recorded time.Time, tick bool) error) error {
	var last time.Time
	return ReadAll(ctx, brokers, topic, func(m kafka.Message) error {
		ev, err := cloudevent.Decode(m.Value)
		if err != nil {
			return fmt.Errorf("journal offset %d is not a CloudEvent: %w", m.Offset, err)
		}
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if ev.Type == settle.ClockTickType {
			if err := usageLines(ctx, ch, last, ev.Time, func(line []byte) error { return fn(line, "", 0, time.Time{}, false) }); err != nil {
				return err
			}
			last = ev.Time
			return fn(m.Value, "", 0, ev.Time, true)
		}
		src := ""
		var off int64
		if t := h["tally-source-topic"]; t != "" {
			src = t + "/" + h["tally-source-partition"]
			off, _ = strconv.ParseInt(h["tally-source-offset"], 10, 64)
		}
		return fn(m.Value, src, off, ev.RecordedAt, false)
	})
}

// Export writes the settle worker's log as JSON lines: `tally replay` over it reproduces what the
// worker emitted.
func Export(ctx context.Context, brokers []string, topic string, ch driver.Conn, out io.Writer) (int, error) {
	n := 0
	err := Journal(ctx, brokers, topic, ch, func(line []byte, _ string, _ int64, _ time.Time, _ bool) error {
		n++
		if _, err := out.Write(line); err != nil {
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
