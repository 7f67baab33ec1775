package worker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/kafkax"
)

// Offsets maps each usage partition to an offset.
type Offsets map[int32]int64

// usageRows reads, from usage_events, the usage records with offsets in [from, to) of each
// partition that are the first copy of their identity (account, service, month, id) among all
// records before to, in the order ingest received them (receive time, then partition and offset),
// each as its usage event and receive time (UsageLine makes it the log line `tally replay` reads
// for it). So duplicates never reach the billing core, whichever copies ClickHouse has merged away
// yet, and it need not remember every id it has seen. Offsets, not times, bound a tick's usage,
// so a record appended after a settlement with an older timestamp is billed at the next one (as
// late), never skipped.
func usageRows(ctx context.Context, ch driver.Conn, from, to Offsets, fn func(u contract.Usage, received time.Time) error) error {
	query, args, ok := firstCopyUsageQuery(from, to)
	if !ok {
		return nil
	}
	rows, err := ch.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, account, service string
		var at, received time.Time
		var calls uint32
		var partition int32
		var offset int64
		if err := rows.Scan(&id, &account, &service, &at, &calls, &received, &partition, &offset); err != nil {
			return err
		}
		if err := fn(contract.Usage{ID: id, Account: account, Service: service, Calls: int64(calls), Time: at}, received); err != nil {
			return err
		}
	}
	return rows.Err()
}

// firstCopyUsageQuery is usageRows' query: the rows with offsets in [from, to) of each partition
// that are the first copy of their identity among all rows before to. ok is false when the range
// is empty. Partitions are taken in order, so the same offsets give the same text.
func firstCopyUsageQuery(from, to Offsets) (query string, args []any, ok bool) {
	var inRange, below []string
	var rangeArgs, belowArgs []any
	for _, p := range slices.Sorted(maps.Keys(to)) {
		end := to[p]
		below = append(below, "(kafka_partition = ? AND kafka_offset < ?)")
		belowArgs = append(belowArgs, p, end)
		if start := from[p]; end > start {
			inRange = append(inRange, "(kafka_partition = ? AND kafka_offset >= ? AND kafka_offset < ?)")
			rangeArgs = append(rangeArgs, p, start, end)
		}
	}
	if len(inRange) == 0 {
		return "", nil, false
	}
	rangeCond := strings.Join(inRange, " OR ")
	// The months the range touches, in receive order, each identity's first row kept (LIMIT 1
	// BY): the first copy may lie before the range, and then the range's copy is a retry.
	// (As fast as reading the range alone; a GROUP BY with argMin was four times slower.)
	query = `SELECT id, account, service, event_time, calls, received_at, kafka_partition, kafka_offset FROM (
			SELECT id, account, service, period, event_time, calls, received_at, kafka_partition, kafka_offset
			FROM usage_events
			WHERE period IN (SELECT DISTINCT period FROM usage_events WHERE ` + rangeCond + `) AND (` + strings.Join(below, " OR ") + `)
			ORDER BY received_at, kafka_partition, kafka_offset
			LIMIT 1 BY account, service, period, id)
		WHERE ` + rangeCond + `
		ORDER BY received_at, kafka_partition, kafka_offset`
	args = append(append(append([]any{}, rangeArgs...), belowArgs...), rangeArgs...)
	return query, args, true
}

// UsageLine is the CloudEvent line of a stored usage row, written by contract.Encode. Ingest
// stores only UTF-8 ids (encoding/json decodes a bad byte as U+FFFD); a row written to ClickHouse
// by other means gets the same replacement here rather than stopping an export.
func UsageLine(u contract.Usage, received time.Time) []byte {
	return contract.MustEncode(contract.Event{ID: strings.ToValidUTF8(u.ID, "\uFFFD"), Source: "tally.usage_events", Type: contract.UsageType, Time: u.Time.UTC(), RecordedAt: received.UTC(),
		Data: contract.UsageData{Account: u.Account, Service: u.Service, Calls: u.Calls}})
}

// firstUsage is when ingest received the earliest stored usage, and the earliest instant a stored
// call happened (zeros when there is none).
func firstUsage(ctx context.Context, ch driver.Conn) (received, occurred time.Time, err error) {
	var n uint64
	if err := ch.QueryRow(ctx, "SELECT count(), min(received_at), min(event_time) FROM usage_events").Scan(&n, &received, &occurred); err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("read first usage: %w", err)
	}
	if n == 0 {
		return time.Time{}, time.Time{}, nil
	}
	return received, occurred, nil
}

// usageComplete reports whether every usage record received before s is in usage_events: for each
// partition of the usage topic, the sink's progress has passed the first record at or after s
// (or the end of the partition, when there is none yet).
//
// It returns those offsets: the end of the usage the settlement at s covers.
func usageComplete(ctx context.Context, ch driver.Conn, brokers []string, topic, sinkGroup string, s time.Time) (Offsets, string, error) {
	parts, err := kafkax.Partitions(ctx, brokers, topic)
	if err != nil {
		return nil, "", err
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	var atS []kafka.OffsetRequest
	for _, p := range parts {
		atS = append(atS, kafka.TimeOffsetOf(p, s))
	}
	byTime, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: atS}})
	if err != nil {
		return nil, "", fmt.Errorf("offsets of %s at %s: %w", topic, s.Format(time.RFC3339), err)
	}
	last, err := kafkax.EndOffsets(ctx, brokers, topic)
	if err != nil {
		return nil, "", err
	}
	need := Offsets{}
	for p, o := range last {
		need[int32(p)] = o
	}
	for _, po := range byTime.Topics[topic] {
		for off := range po.Offsets {
			if off >= 0 {
				need[int32(po.Partition)] = off
			}
		}
	}
	done := Offsets{}
	rows, err := ch.Query(ctx, "SELECT kafka_partition, max(next_offset) FROM sink_progress WHERE consumer = ? AND kafka_topic = ? GROUP BY kafka_partition", sinkGroup, topic)
	if err != nil {
		return nil, "", fmt.Errorf("read sink progress: %w", err)
	}
	for rows.Next() {
		var p int32
		var o int64
		if err := rows.Scan(&p, &o); err != nil {
			rows.Close()
			return nil, "", err
		}
		done[p] = o
	}
	rows.Close()
	for p, o := range need {
		if done[p] < o {
			return nil, fmt.Sprintf("partition %d: sink at offset %d, usage before %s ends at %d", p, done[p], s.Format(time.RFC3339), o), nil
		}
	}
	return need, "", nil
}
