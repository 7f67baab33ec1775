package worker

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tally-billing/tally/contract"
	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/testinfra"
)

// BenchmarkUsageLines reads a month of 2,000,000 stored usage rows of 10,000 accounts over 4
// partitions (1% of them gateway retries) the way a settlement does: first copies only, in receive
// order, as lines.
func BenchmarkUsageLines(b *testing.B) {
	conn, cfg := testinfra.ClickHouse(b, clickhouse.HTTP)
	ctx := context.Background()
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		b.Fatal(err)
	}
	const rows = 2_000_000
	// Row n is request n, except every 100th, which repeats request n-50 (a retry).
	if err := conn.Exec(ctx, `INSERT INTO usage_events (account, service, period, id, event_time, calls, received_at, kafka_topic, kafka_partition, kafka_offset)
		SELECT concat('acct-', toString(r % 10000)), 'image-tagging', 202610, concat('req-', toString(r)),
		       toDateTime64('2026-10-01 00:00:00', 9, 'UTC') + r, 1, toDateTime64('2026-10-01 00:00:00', 3, 'UTC') + number / 1000,
		       'usage', toInt32(r % 10000 % 4), toInt64(number)
		FROM (SELECT number, if(number % 100 = 99, number - 50, number) AS r FROM numbers(?))`, rows); err != nil {
		b.Fatal(err)
	}
	to := Offsets{0: rows, 1: rows, 2: rows, 3: rows} // offsets are the row number: unique, increasing
	b.ResetTimer()
	var n int
	for range b.N {
		n = 0
		if err := usageRows(ctx, conn, Offsets{}, to, func(u contract.Usage, received time.Time) error {
			_ = UsageLine(u, received) // what the figure in BENCHMARKS.md includes
			n++
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(n), "lines")
}
