package worker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/settle"
)

// windowedCalls reads the calls of (account, service) in months from..to out of usage_events (each
// identity once), counted per month and per pack window (between consecutive bounds): all prepaid
// packs ask of a call, so a quote from these counts is exact (settle.CallsAt).
func windowedCalls(ctx context.Context, ch driver.Conn, loc *time.Location, account, service string, from, to contract.Period, bounds []time.Time) ([]settle.CallsAt, error) {
	query, args := windowedCallsQuery(account, service, from, to, bounds)
	rows, err := ch.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read the calls prepaid packs cover from usage_events: %w", err)
	}
	defer rows.Close()
	var out []settle.CallsAt
	for rows.Next() {
		var period, window uint32
		var calls int64
		if err := rows.Scan(&period, &window, &calls); err != nil {
			return nil, err
		}
		at := contract.PeriodOfYYYYMM(period).Start(loc)
		if window > 0 && int(window) <= len(bounds) && bounds[window-1].After(at) {
			at = bounds[window-1]
		}
		out = append(out, settle.CallsAt{At: at, Calls: calls})
	}
	return out, rows.Err()
}

// windowedCallsQuery is windowedCalls' query. A call's window is how many bounds lie at or before
// it (0: before the first); the bounds are bound as an array of Unix nanoseconds.
func windowedCallsQuery(account, service string, from, to contract.Period, bounds []time.Time) (string, []any) {
	nanos := make([]int64, len(bounds))
	for i, b := range bounds {
		nanos[i] = b.UnixNano()
	}
	return `SELECT period, toUInt32(arraySum(arrayMap(b -> toUnixTimestamp64Nano(event_time) >= b, CAST(? AS Array(Int64))))) AS window, toInt64(sum(calls))
		FROM usage_events FINAL
		WHERE account = ? AND service = ? AND period >= ? AND period <= ?
		GROUP BY period, window`, []any{nanos, account, service, from.YYYYMM(), to.YYYYMM()}
}

// fitToRunning makes the calls of period p add up to the running total: usage_events trails the
// aggregator by the sink's lag, so the calls it has not written yet are counted at the instant
// fresh (they are the latest); when the sink is ahead, the latest calls are dropped instead.
func fitToRunning(calls []settle.CallsAt, p contract.Period, loc *time.Location, running int64, fresh time.Time) []settle.CallsAt {
	slices.SortFunc(calls, func(a, b settle.CallsAt) int { return a.At.Compare(b.At) })
	var stored int64
	for _, c := range calls {
		if contract.PeriodOf(c.At, loc) == p {
			stored += c.Calls
		}
	}
	if running > stored {
		return append(calls, settle.CallsAt{At: fresh, Calls: running - stored})
	}
	excess := stored - running
	for i := len(calls) - 1; i >= 0 && excess > 0; i-- {
		if contract.PeriodOf(calls[i].At, loc) != p {
			continue
		}
		take := min(excess, calls[i].Calls)
		calls[i].Calls -= take
		excess -= take
	}
	return calls
}
