package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/testinfra"
)

// usageLines passes on each identity's first copy once, in receive order, whether the retry is
// in the same range or a later one, and whether or not ClickHouse has merged it away yet.
func TestUsageLinesPassFirstCopiesOnly(t *testing.T) {
	conn, cfg := testinfra.ClickHouse(t, clickhouse.Native)
	ctx := context.Background()
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 10, 10, 0, 0, 0, 0, time.UTC)
	type row struct {
		partition int32
		offset    int64
		account   string
		id        string
		month     int // 10 or 11
		received  int // seconds after base
	}
	rows := []row{
		{0, 0, "acme", "a", 10, 10},
		{0, 1, "acme", "b", 10, 20},
		{0, 2, "acme", "a", 10, 30}, // a retry in the same range
		{0, 3, "acme", "c", 10, 40},
		{0, 4, "acme", "b", 10, 50}, // a retry of a record of the previous range
		{0, 5, "acme", "d", 10, 60},
		{0, 5, "acme", "d", 10, 60}, // the same record written twice
		{0, 6, "acme", "a", 11, 70}, // another month: another identity
		{1, 0, "zed", "e", 10, 15},
		{1, 1, "zed", "a", 10, 25}, // another account: another identity
	}
	for _, r := range rows {
		at := time.Date(2026, time.Month(r.month), 5, 0, 0, 0, 0, time.UTC)
		if err := conn.Exec(ctx, `INSERT INTO usage_events (account, service, period, id, event_time, calls, received_at, kafka_topic, kafka_partition, kafka_offset)
			VALUES (?, 'image-tagging', ?, ?, ?, 1, ?, 'usage', ?, ?)`, r.account, uint32(202600+r.month), r.id, at, base.Add(time.Duration(r.received)*time.Second), r.partition, r.offset); err != nil {
			t.Fatal(err)
		}
	}
	read := func(from, to Offsets) string {
		var got []string
		if err := usageLines(ctx, conn, from, to, func(line []byte) error {
			ev, err := cloudevent.Decode(line)
			if err != nil {
				return err
			}
			got = append(got, fmt.Sprintf("%s@%d", ev.ID, ev.Time.Month()))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, " ")
	}
	if got, want := read(Offsets{}, Offsets{0: 3, 1: 1}), "a@10 e@10 b@10"; got != want {
		t.Fatalf("first range: %s, want %s", got, want)
	}
	if got, want := read(Offsets{0: 3, 1: 1}, Offsets{0: 7, 1: 2}), "a@10 c@10 d@10 a@11"; got != want {
		t.Fatalf("second range: %s, want %s (zed's a, c, d, acme's November a)", got, want)
	}
	// Merged or not, the answer is the same.
	if err := conn.Exec(ctx, "OPTIMIZE TABLE usage_events FINAL"); err != nil {
		t.Fatal(err)
	}
	if got, want := read(Offsets{0: 3, 1: 1}, Offsets{0: 7, 1: 2}), "a@10 c@10 d@10 a@11"; got != want {
		t.Fatalf("second range after merging: %s, want %s", got, want)
	}
}
