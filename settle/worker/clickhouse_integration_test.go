package worker

// Integration tests of the worker's ClickHouse adapters: the usage it reads, the snapshots it keeps.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tally-billing/tally/contract"
	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
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

// usageSummaries and windowedUsage, computed by ClickHouse, agree with the first copies usageRows
// passes on, summed in Go: random usage over three months with retries on other partitions (of
// other calls and times), records written twice, and ids the fast path does not take.
func TestUsageSummariesAndWindowsAgreeWithTheRows(t *testing.T) {
	conn, cfg := testinfra.ClickHouse(t, clickhouse.HTTP)
	ctx := context.Background()
	if _, err := chx.Migrate(ctx, cfg, chschema.Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 8))
	start := time.Date(2026, 9, 1, 0, 0, 0, 0, loc)
	batch, err := conn.PrepareBatch(ctx, `INSERT INTO usage_events (account, service, period, id, event_time, calls, received_at, kafka_topic, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	next := map[int32]int64{}
	ids := []string{"plain", `quote"d`, "<tag>", "caf\u00e9", "amp&"}
	for i := range 3000 {
		account, service := fmt.Sprintf("acct-%d", rng.IntN(3)), []string{"image-tagging", "vehicle-recognition"}[rng.IntN(2)]
		id := fmt.Sprintf("u%d", i)
		if rng.IntN(10) == 0 {
			id = ids[rng.IntN(len(ids))] + id
		}
		copies := 1
		if rng.IntN(5) == 0 {
			copies = 2 + rng.IntN(2)
		}
		for range copies { // retries: another partition, maybe other calls and another instant
			at := start.Add(time.Duration(rng.Int64N(int64(88 * 24 * time.Hour))))
			received := at.Add(time.Duration(rng.IntN(600)-300) * time.Second).Truncate(time.Millisecond)
			p := int32(rng.IntN(3))
			for range 1 + rng.IntN(2) { // sometimes the same record twice
				if err := batch.Append(account, service, uint32(contract.PeriodOf(at, loc).YYYYMM()), id, at, uint32(1+rng.IntN(5000)), received, "usage", p, next[p]); err != nil {
					t.Fatal(err)
				}
			}
			next[p]++
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	half := Offsets{0: next[0] / 2, 1: next[1] / 3, 2: next[2]}
	end := Offsets{0: next[0], 1: next[1], 2: next[2]}
	for _, r := range []struct{ from, to Offsets }{{Offsets{}, half}, {half, end}} {
		want := map[string]contract.UsageSummary{}
		if err := usageRows(ctx, conn, r.from, r.to, func(u contract.Usage, received time.Time) error {
			key := u.Account + "/" + u.Service + "/" + contract.PeriodOf(u.Time, loc).String()
			s := want[key]
			s.Add(u, received)
			want[key] = s
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		got := map[string]contract.UsageSummary{}
		if err := usageSummaries(ctx, conn, loc, r.from, r.to, func(s contract.UsageSummary) error {
			got[s.Account+"/"+s.Service+"/"+contract.PeriodOf(s.First, loc).String()] = s
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(want) < 10 {
			t.Fatalf("only %d groups: the generator is too small", len(want))
		}
		for key, w := range want {
			g := got[key]
			g.First, g.Last, g.LastReceived = g.First.In(w.First.Location()), g.Last.In(w.Last.Location()), g.LastReceived.In(w.LastReceived.Location())
			if g != w {
				t.Fatalf("%s from %v to %v: ClickHouse summed %+v, the rows add up to %+v", key, r.from, r.to, g, w)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d summaries, the rows make %d groups", len(got), len(want))
		}
	}

	// Narrowed to some pairs, usageRowsOf passes on exactly those pairs' rows, in the same order.
	var all, narrowed []string
	if err := usageRows(ctx, conn, half, end, func(u contract.Usage, _ time.Time) error {
		if u.Account == "acct-1" || (u.Account == "acct-2" && u.Service == "image-tagging") {
			all = append(all, u.Account+"/"+u.Service+"/"+u.ID)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pairs := []clickhouse.GroupSet{{Value: []any{"acct-1", "image-tagging"}}, {Value: []any{"acct-1", "vehicle-recognition"}}, {Value: []any{"acct-2", "image-tagging"}}}
	if err := usageRowsOf(ctx, conn, half, end, pairs, func(u contract.Usage, _ time.Time) error {
		narrowed = append(narrowed, u.Account+"/"+u.Service+"/"+u.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(all, narrowed) || len(all) == 0 {
		t.Fatalf("narrowed read: %d rows, the pairs' rows of the whole read: %d", len(narrowed), len(all))
	}

	// Windows of every (account, service) through November, between random bounds and the month
	// starts, over the first copies below end.
	var rows []contract.Usage
	if err := usageRows(ctx, conn, Offsets{}, end, func(u contract.Usage, _ time.Time) error { rows = append(rows, u); return nil }); err != nil {
		t.Fatal(err)
	}
	var reqs []settle.WindowRequest
	for a := range 3 {
		for _, service := range []string{"image-tagging", "vehicle-recognition"} {
			q := settle.WindowRequest{Account: fmt.Sprintf("acct-%d", a), Service: service, End: time.Date(2026, 11, 1, 0, 0, 0, 0, loc)}
			q.Bounds = []time.Time{start, time.Date(2026, 10, 1, 0, 0, 0, 0, loc), q.End}
			for range rng.IntN(6) {
				q.Bounds = append(q.Bounds, start.Add(time.Duration(rng.Int64N(int64(80*24*time.Hour)))))
			}
			for _, u := range rows { // a bound at a call's own instant: the call is in the window it opens
				if u.Account == q.Account && u.Service == q.Service && u.Time.Before(q.End) {
					q.Bounds = append(q.Bounds, u.Time)
					break
				}
			}
			slices.SortFunc(q.Bounds, time.Time.Compare)
			reqs = append(reqs, q)
		}
	}
	got, err := windowedUsage(ctx, conn, end, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, q := range reqs {
		sums := map[int]settle.CallsAt{}
		for _, u := range rows {
			if u.Account != q.Account || u.Service != q.Service || !u.Time.Before(q.End) {
				continue
			}
			k := 0
			for _, b := range q.Bounds {
				if !b.After(u.Time) {
					k++
				}
			}
			c, seen := sums[k]
			if !seen || u.Time.Before(c.At) {
				c.At = u.Time
			}
			c.Calls += u.Calls
			sums[k] = c
		}
		var want []string
		for _, c := range sums {
			want = append(want, fmt.Sprintf("%d@%d", c.Calls, c.At.UnixNano()))
		}
		var have []string
		for _, c := range got[i] {
			have = append(have, fmt.Sprintf("%d@%d", c.Calls, c.At.UnixNano()))
		}
		slices.Sort(want)
		slices.Sort(have)
		if !slices.Equal(want, have) || len(want) == 0 {
			t.Fatalf("%s/%s windows: ClickHouse %v, the rows %v", q.Account, q.Service, have, want)
		}
	}
}
