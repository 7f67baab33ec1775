package chx_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/testinfra"
)

// Batch insert, ReplacingMergeTree collapsing duplicates under FINAL, and an exact Decimal round
// trip: over both the native and the HTTP protocol.
func TestClickHouseRoundTrip(t *testing.T) {
	for _, proto := range []clickhouse.Protocol{clickhouse.Native, clickhouse.HTTP} {
		t.Run(proto.String(), func(t *testing.T) {
			conn, _ := testinfra.ClickHouse(t, proto)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := conn.Exec(ctx, `CREATE TABLE ev (
				account String, id String, calls UInt32, amount Decimal(18, 2), at DateTime64(3, 'UTC'))
				ENGINE = ReplacingMergeTree ORDER BY (account, id)`); err != nil {
				t.Fatal(err)
			}
			at := time.Date(2026, 10, 31, 16, 0, 0, 123_000_000, time.UTC)
			// Two batches (two parts) that share ids 0..4, as a redelivered batch would.
			for b := range 2 {
				batch, err := conn.PrepareBatch(ctx, "INSERT INTO ev")
				if err != nil {
					t.Fatal(err)
				}
				for i := range 5 + 5*b {
					if err := batch.Append("a1", fmt.Sprintf("e%02d", i), uint32(i+1), decimal.RequireFromString("2694.05"), at); err != nil {
						t.Fatal(err)
					}
				}
				if err := batch.Send(); err != nil {
					t.Fatalf("send batch %d: %v", b, err)
				}
			}
			var raw, final uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM ev").Scan(&raw); err != nil {
				t.Fatal(err)
			}
			if err := conn.QueryRow(ctx, "SELECT count() FROM ev FINAL").Scan(&final); err != nil {
				t.Fatal(err)
			}
			if raw != 15 || final != 10 {
				t.Fatalf("count raw=%d final=%d, want 15 and 10", raw, final)
			}
			var sum decimal.Decimal
			var gotAt time.Time
			if err := conn.QueryRow(ctx, "SELECT sum(amount), max(at) FROM ev FINAL").Scan(&sum, &gotAt); err != nil {
				t.Fatal(err)
			}
			if !sum.Equal(decimal.RequireFromString("26940.50")) {
				t.Fatalf("sum = %s, want 26940.50", sum)
			}
			if !gotAt.Equal(at) {
				t.Fatalf("DateTime64 round trip: %v, want %v", gotAt, at)
			}
		})
	}
}

func TestPingHTTPAndSelectOne(t *testing.T) {
	conn, _ := testinfra.ClickHouse(t, clickhouse.Native)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := chx.PingHTTP(ctx, "http://"+testinfra.ClickHouseHTTPAddr()); err != nil {
		t.Fatal(err)
	}
	if err := chx.SelectOne(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := chx.PingHTTP(ctx, "http://127.0.0.1:1"); err == nil {
		t.Fatal("PingHTTP of a closed port succeeded")
	}
}
