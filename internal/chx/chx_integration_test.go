package chx_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/internal/tlsfiles"
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
	if err := chx.PingHTTP(ctx, "http://"+testinfra.ClickHouseHTTPAddr(), nil); err != nil {
		t.Fatal(err)
	}
	if err := chx.SelectOne(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := chx.PingHTTP(ctx, "http://127.0.0.1:1", nil); err == nil {
		t.Fatal("PingHTTP of a closed port succeeded")
	}
}

// Over TLS, to the real ClickHouse behind a TLS terminator (the local engine serves no TLS
// itself): on the native protocol a client trusting the certificate's CA connects and queries,
// one trusting another CA or speaking plaintext to the TLS port gets nothing; the HTTP
// interface answers /ping over HTTPS (queries over HTTPS need a user with a password, which
// the local engine has not; Validate says so).
func TestTLSConnections(t *testing.T) {
	ca := testinfra.NewCA(t, "clickhouse")
	cert := ca.Issue(t, "clickhouse", "127.0.0.1")
	trusting, err := tlsfiles.Client{CAFile: ca.CertFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := tlsfiles.Client{CAFile: testinfra.NewCA(t, "stranger").CertFile}.Config()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	native := chx.Config{Addr: testinfra.TLSProxy(t, testinfra.ClickHouseNativeAddr(), cert), Protocol: clickhouse.Native, Username: "default", TLS: trusting}
	conn, err := chx.Open(ctx, native)
	if err != nil {
		t.Fatalf("native over TLS: %v", err)
	}
	err = chx.SelectOne(ctx, conn)
	_ = conn.Close()
	if err != nil {
		t.Fatalf("native over TLS: SELECT 1: %v", err)
	}
	for name, tlsConfig := range map[string]*tls.Config{"another CA": stranger, "no TLS": nil} {
		bad := native
		bad.TLS = tlsConfig
		if conn, err := chx.Open(ctx, bad); err == nil {
			_ = conn.Close()
			t.Errorf("native with %s: connected", name)
		}
	}

	https := "https://" + testinfra.TLSProxy(t, testinfra.ClickHouseHTTPAddr(), cert)
	if err := chx.PingHTTP(ctx, https, trusting); err != nil {
		t.Errorf("ping over https: %v", err)
	}
	if err := chx.PingHTTP(ctx, https, stranger); err == nil {
		t.Error("ping over https trusting another CA answered")
	}
	noPassword := chx.Config{Addr: strings.TrimPrefix(https, "https://"), Protocol: clickhouse.HTTP, Username: "default", TLS: trusting}
	if err := noPassword.Validate(); err == nil || !strings.Contains(err.Error(), "needs a password") {
		t.Errorf("HTTPS without a password: %v", err)
	}
}
