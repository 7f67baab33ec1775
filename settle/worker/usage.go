package worker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/settle"
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
	return usageRowsOf(ctx, ch, from, to, nil, fn)
}

// usageRowsOf is usageRows narrowed to the (account, service) pairs given (all when nil).
func usageRowsOf(ctx context.Context, ch driver.Conn, from, to Offsets, pairs []clickhouse.GroupSet, fn func(u contract.Usage, received time.Time) error) error {
	query, args, ok := firstCopyUsageQuery(from, to, pairs)
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
// that are the first copy of their identity among all rows before to, in receive order. ok is
// false when the range is empty. Partitions are taken in order, so the same offsets give the same
// text.
func firstCopyUsageQuery(from, to Offsets, pairs []clickhouse.GroupSet) (query string, args []any, ok bool) {
	filter, filterArgs := "", []any(nil)
	if pairs != nil {
		filter, filterArgs = "(account, service) IN (?)", []any{pairs}
	}
	query, args, ok = firstCopies(from, to, filter, filterArgs)
	return query + "\n\t\tORDER BY received_at, kafka_partition, kafka_offset", args, ok
}

// firstCopies selects (id, account, service, event_time, calls, received_at, kafka_partition,
// kafka_offset) of the rows with offsets in [from, to) of each partition that are the first copy
// of their identity among all rows before to, in no order. filter, when not empty, is a condition
// on (account, service, period) with its args: it narrows the identities looked at.
func firstCopies(from, to Offsets, filter string, filterArgs []any) (query string, args []any, ok bool) {
	rangeCond, rangeArgs, ok := offsetRange(from, to)
	if !ok {
		return "", nil, false
	}
	var below []string
	var belowArgs []any
	for _, p := range slices.Sorted(maps.Keys(to)) {
		below = append(below, "(kafka_partition = ? AND kafka_offset < ?)")
		belowArgs = append(belowArgs, p, to[p])
	}
	narrow := ""
	if filter != "" {
		narrow = " AND (" + filter + ")"
	}
	// The months the range touches, in receive order, each identity's first row kept (LIMIT 1
	// BY): the first copy may lie before the range, and then the range's copy is a retry.
	// (As fast as reading the range alone; a GROUP BY with argMin was four times slower.)
	query = `SELECT id, account, service, event_time, calls, received_at, kafka_partition, kafka_offset FROM (
			SELECT id, account, service, period, event_time, calls, received_at, kafka_partition, kafka_offset
			FROM usage_events
			WHERE period IN (SELECT DISTINCT period FROM usage_events WHERE (` + rangeCond + `)` + narrow + `) AND (` + strings.Join(below, " OR ") + `)` + narrow + `
			ORDER BY received_at, kafka_partition, kafka_offset
			LIMIT 1 BY account, service, period, id)
		WHERE ` + rangeCond
	args = append(args, rangeArgs...)
	args = append(args, filterArgs...)
	args = append(args, belowArgs...)
	args = append(args, filterArgs...)
	args = append(args, rangeArgs...)
	return query, args, true
}

// offsetRange is the condition that a row's offset is in [from, to) of its partition, with its
// args; ok is false when the range is empty. Partitions are taken in order, so the same offsets
// give the same text.
func offsetRange(from, to Offsets) (cond string, args []any, ok bool) {
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(to)) {
		if start, end := from[p], to[p]; end > start {
			parts = append(parts, "(kafka_partition = ? AND kafka_offset >= ? AND kafka_offset < ?)")
			args = append(args, p, start, end)
		}
	}
	return strings.Join(parts, " OR "), args, len(parts) > 0
}

// plainIDPattern matches the ids contract.PlainUsage takes (printable ASCII JSON does not escape).
const plainIDPattern = `^[ !#-%'-;=?-\[\]-~]*$`

// usageSummaries reads the first copies usageRows would read, summed per (account, service,
// month in the billing time zone loc), each sum with the extremes that tell whether every event in it is plain
// (contract.UsageSummary): one row per (account, service, month) instead of one per event.
func usageSummaries(ctx context.Context, ch driver.Conn, loc *time.Location, from, to Offsets, fn func(contract.UsageSummary) error) error {
	inner, args, ok := firstCopies(from, to, "", nil)
	if !ok {
		return nil
	}
	query := `SELECT account, service, count(), toInt64(sum(calls)), toInt64(min(calls)), toInt64(max(calls)), min(length(id)), max(length(id)),
			countIf(NOT match(id, ?)), min(event_time), max(event_time),
			max(toUnixTimestamp64Nano(event_time) - toUnixTimestamp64Nano(received_at)), max(received_at)
		FROM (` + inner + `)
		GROUP BY account, service, toYYYYMM(event_time, ?)`
	rows, err := ch.Query(ctx, query, append(append([]any{plainIDPattern}, args...), loc.String())...)
	if err != nil {
		return fmt.Errorf("read usage totals: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s contract.UsageSummary
		var events, notPlain, minLen, maxLen uint64
		var lead int64
		if err := rows.Scan(&s.Account, &s.Service, &events, &s.Calls, &s.MinCalls, &s.MaxCalls, &minLen, &maxLen, &notPlain, &s.First, &s.Last, &lead, &s.LastReceived); err != nil {
			return err
		}
		s.Events, s.IDsNotPlain, s.MinIDLen, s.MaxIDLen, s.Lead = int64(events), int64(notPlain), int(minLen), int(maxLen), time.Duration(lead)
		if err := fn(s); err != nil {
			return err
		}
	}
	return rows.Err()
}

// usageExtent describes the usage records with offsets in [from, to), retries included, so it
// bounds the first copies from outside: the earliest call instant and the latest receipt (zeros
// when there is none), how many records, and about how many (account, service) pairs they name.
type usageExtent struct {
	earliestCall, latestReceipt time.Time
	records, pairs              uint64
}

// summariesPay: reading one summary per (account, service, month) costs more per row than
// reading an event (more columns, a heavier query), so it pays only where pairs have several
// events. (BenchmarkSettleMonth, one event per pair, 100k × 8: usage read in 6.3 s as summaries,
// 2.0 s as rows.)
func (x usageExtent) summariesPay() bool { return x.records >= 2*x.pairs }

func readUsageExtent(ctx context.Context, ch driver.Conn, from, to Offsets) (usageExtent, error) {
	var x usageExtent
	cond, args, ok := offsetRange(from, to)
	if !ok {
		return x, nil
	}
	if err := ch.QueryRow(ctx, "SELECT count(), uniq(account, service), min(event_time), max(received_at) FROM usage_events WHERE "+cond, args...).
		Scan(&x.records, &x.pairs, &x.earliestCall, &x.latestReceipt); err != nil {
		return x, fmt.Errorf("read the extent of usage: %w", err)
	}
	if x.records == 0 {
		return usageExtent{}, nil
	}
	return x, nil
}

// windowedUsage answers the billing core's window requests (settle.UsageWindows) from the first
// copies among the usage records before to: per request, its months through Through summed per
// window between its bounds, each sum at its earliest call. Requests go in groups whose bound
// text stays well under ClickHouse's query size limit.
func windowedUsage(ctx context.Context, ch driver.Conn, to Offsets, reqs []settle.WindowRequest) ([][]settle.CallsAt, error) {
	out := make([][]settle.CallsAt, len(reqs))
	for start := 0; start < len(reqs); {
		end, size := start, 0
		for end < len(reqs) && (end == start || size < windowQueryBytes) {
			size += 2*(len(reqs[end].Account)+len(reqs[end].Service)) + 24*len(reqs[end].Bounds) + 32
			end++
		}
		if err := windowedUsageGroup(ctx, ch, to, reqs[start:end], out[start:end]); err != nil {
			return nil, err
		}
		start = end
	}
	return out, nil
}

// windowQueryBytes bounds the request text of one windowed-usage query.
const windowQueryBytes = 96 << 10

func windowedUsageGroup(ctx context.Context, ch driver.Conn, to Offsets, reqs []settle.WindowRequest, out [][]settle.CallsAt) error {
	query, args, ok := windowedUsageQuery(to, reqs)
	if !ok {
		return nil
	}
	index := make(map[[2]string]int, len(reqs))
	for i, q := range reqs {
		index[[2]string{q.Account, q.Service}] = i
	}
	rows, err := ch.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read the calls prepaid packs cover from usage_events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var account, service string
		var at time.Time
		var calls int64
		if err := rows.Scan(&account, &service, &at, &calls); err != nil {
			return err
		}
		i, found := index[[2]string{account, service}]
		if !found {
			return fmt.Errorf("read the calls prepaid packs cover: %s/%s was not asked for", account, service)
		}
		out[i] = append(out[i], settle.CallsAt{At: at, Calls: calls})
	}
	return rows.Err()
}

// windowedUsageQuery is windowedUsageGroup's query. A call's window is how many of its request's
// bounds (Unix nanoseconds) lie at or before it; calls at or after a request's end are left out.
func windowedUsageQuery(to Offsets, reqs []settle.WindowRequest) (string, []any, bool) {
	pairs := make([]clickhouse.GroupSet, len(reqs))
	accounts, services := make([]string, len(reqs)), make([]string, len(reqs))
	bounds, ends := make([][]int64, len(reqs)), make([]int64, len(reqs))
	var last int64
	for i, q := range reqs {
		pairs[i] = clickhouse.GroupSet{Value: []any{q.Account, q.Service}}
		accounts[i], services[i], ends[i] = q.Account, q.Service, q.End.UnixNano()
		bounds[i] = make([]int64, len(q.Bounds))
		for j, b := range q.Bounds {
			bounds[i][j] = b.UnixNano()
		}
		last = max(last, ends[i])
	}
	inner, args, ok := firstCopies(Offsets{}, to, "(account, service) IN (?) AND toUnixTimestamp64Nano(event_time) < ?", []any{pairs, last})
	if !ok {
		return "", nil, false
	}
	query := `SELECT u.account, u.service, min(u.event_time), toInt64(sum(u.calls))
		FROM (` + inner + `) AS u
		INNER JOIN (
			SELECT r.1 AS account, r.2 AS service, r.3 AS bounds, r.4 AS end_nanos
			FROM (SELECT arrayJoin(arrayZip(CAST(? AS Array(String)), CAST(? AS Array(String)), CAST(? AS Array(Array(Int64))), CAST(? AS Array(Int64)))) AS r)
		) AS q ON u.account = q.account AND u.service = q.service
		WHERE toUnixTimestamp64Nano(u.event_time) < q.end_nanos
		GROUP BY u.account, u.service, arrayCount(b -> b <= toUnixTimestamp64Nano(u.event_time), q.bounds)`
	return query, append(args, accounts, services, bounds, ends), true
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
func usageComplete(ctx context.Context, ch driver.Conn, c kafkax.Cluster, topic, sinkGroup string, s time.Time) (Offsets, string, error) {
	parts, err := kafkax.Partitions(ctx, c, topic)
	if err != nil {
		return nil, "", err
	}
	client := c.Client(10 * time.Second)
	var atS []kafka.OffsetRequest
	for _, p := range parts {
		atS = append(atS, kafka.TimeOffsetOf(p, s))
	}
	byTime, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: atS}})
	if err != nil {
		return nil, "", fmt.Errorf("offsets of %s at %s: %w", topic, s.Format(time.RFC3339), err)
	}
	last, err := kafkax.EndOffsets(ctx, c, topic)
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
