package worker

// Integration tests of the worker's ClickHouse adapters: the usage it reads, the snapshots it keeps.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tally-billing/tally/contract"
	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/testinfra"
)

// usageRows passes on each identity's first copy once, in receive order, whether the retry is
// in the same range or a later one, and whether or not ClickHouse has merged it away yet.
func TestUsageLinesPassFirstCopiesOnly(t *testing.T) {
	conn, cfg := testinfra.ClickHouse(t, clickhouse.HTTP)
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
		if err := usageRows(ctx, conn, from, to, func(u contract.Usage, _ time.Time) error {
			got = append(got, fmt.Sprintf("%s@%d", u.ID, u.Time.Month()))
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

// The snapshot store gives back the latest snapshot whole and keeps only the latest two.
func TestSnapshotStoreKeepsTheLatestTwo(t *testing.T) {
	conn, cfg := testinfra.ClickHouse(t, clickhouse.HTTP)
	ctx := context.Background()
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	store := &snapshotStore{ch: conn, topic: "journal"}
	other := &snapshotStore{ch: conn, topic: "another-journal"}
	if meta, _, err := store.latest(ctx); err != nil || meta != nil {
		t.Fatalf("empty store: %v, %v", meta, err)
	}
	if _, err := other.save(ctx, snapshotMeta{JournalOffset: 1}, func(w io.Writer) error { _, err := w.Write([]byte("other")); return err }); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		meta := snapshotMeta{JournalOffset: int64(10 * (i + 1)), Fed: Offsets{0: int64(i)}, Next: map[string]int64{"accounts/0": int64(i)}, Billing: map[int]int64{0: int64(i)}}
		state := strings.Repeat(fmt.Sprintf("state %d ", i), 1000)
		if _, err := store.save(ctx, meta, func(w io.Writer) error { _, err := io.WriteString(w, state); return err }); err != nil {
			t.Fatal(err)
		}
	}
	meta, state, err := store.latest(ctx)
	if err != nil || meta == nil {
		t.Fatalf("latest: %v, %v", meta, err)
	}
	body, err := io.ReadAll(state)
	if err != nil || meta.JournalOffset != 40 || meta.Fed[0] != 3 || meta.Next["accounts/0"] != 3 || meta.Billing[0] != 3 || string(body) != strings.Repeat("state 3 ", 1000) {
		t.Fatalf("latest: %+v, %d bytes, %v", meta, len(body), err)
	}
	var kept, others uint64
	if err := conn.QueryRow(ctx, "SELECT countIf(journal_topic = 'journal'), countIf(journal_topic = 'another-journal') FROM settle_snapshots").Scan(&kept, &others); err != nil {
		t.Fatal(err)
	}
	if kept != 2 || others != 1 {
		t.Fatalf("%d snapshots kept (want the latest 2), %d of another journal (want 1)", kept, others)
	}
}
