package worker

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/settle"
)

// A stored usage row becomes a line the billing core reads back exactly, whatever printable id it holds.
func TestUsageLineRoundTrips(t *testing.T) {
	at := time.Date(2026, 10, 5, 2, 0, 0, 123456789, time.UTC)
	received := at.Add(time.Second)
	for _, id := range []string{"plain", "quote\"back\\slash", "ünïcødé-请求", "<html>&"} {
		u := contract.Usage{ID: id, Account: "acme", Service: "image-tagging", Calls: 7, Time: at}
		ev, err := cloudevent.Decode(UsageLine(u, received))
		if err != nil {
			t.Fatalf("%q: %v", id, err)
		}
		got, err := contract.ParseUsage(ev, ev.RecordedAt, settle.DefaultCatalogue())
		if err != nil || got.ID != id || got.Calls != 7 || !got.Time.Equal(at) || !ev.RecordedAt.Equal(received) {
			t.Fatalf("%q: got %+v (recorded %v), err %v", id, got, ev.RecordedAt, err)
		}
	}
	// An id with a control character is refused at every edge; a row holding one anyway (written
	// by other means) gives a line that replay refuses too, rather than a different id.
	u := contract.Usage{ID: "ctl\x01\x7f", Account: "acme", Service: "image-tagging", Calls: 7, Time: at}
	if _, err := cloudevent.Decode(UsageLine(u, received)); err == nil {
		t.Fatal("a line with a control character in its id was accepted")
	}
}

// The settle worker applies a plain stored usage row directly (settle.Replayer.StoredUsage) and
// any other through its log line: for any row, both ways leave the billing core where the line
// leaves it, so the worker's bills stay the replay's.
func FuzzStoredUsageMatchesItsLine(f *testing.F) {
	f.Add("u-1", "acme", "image-tagging", int64(7), int64(1_790_000_000_000_000_000), int64(1_000_000_000))
	f.Add("quote\"", "acme", "image-tagging", int64(1), int64(1_790_000_000_000_000_000), int64(0))
	f.Add("u", "bad account!", "image-tagging", int64(1), int64(1_790_000_000_000_000_000), int64(0))
	f.Add("u", "acme", "no-such-service", int64(0), int64(0), int64(-400_000_000_000))
	f.Add("<id>", "acme", "image-enhancement", int64(1_000_001), int64(1_790_000_000_000_000_001), int64(5))
	f.Fuzz(func(t *testing.T, id, account, service string, calls, at, receivedAfter int64) {
		u := contract.Usage{ID: id, Account: account, Service: service, Calls: calls, Time: time.Unix(0, at).UTC()}
		received := u.Time.Add(time.Duration(receivedAfter)).Truncate(time.Millisecond) // received_at holds milliseconds
		cfg := settle.Config{Catalogue: settle.DefaultCatalogue(), Location: time.UTC}
		var direct, viaLine []string
		a, _ := settle.NewReplayer(cfg, settle.ReplayOptions{UsageDeduplicated: true}, func(o cloudevent.Out) error { direct = append(direct, o.ID); return nil })
		b, _ := settle.NewReplayer(cfg, settle.ReplayOptions{UsageDeduplicated: true}, func(o cloudevent.Out) error { viaLine = append(viaLine, o.ID); return nil })
		line := UsageLine(u, received)
		errA := a.StoredUsage(u, received, func() []byte { return line })
		errB := b.Line(line)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("direct: %v, line: %v", errA, errB)
		}
		end := received.AddDate(0, 2, 0)
		if err := a.Advance(end); err != nil {
			t.Fatal(err)
		}
		if err := b.Advance(end); err != nil {
			t.Fatal(err)
		}
		if a.Stats().Lines != b.Stats().Lines || a.Stats().Accepted != b.Stats().Accepted || strings.Join(direct, ",") != strings.Join(viaLine, ",") {
			t.Fatalf("direct: %+v %v; line: %+v %v", a.Stats(), direct, b.Stats(), viaLine)
		}
		var sa, sb bytes.Buffer
		if err := a.Snapshot(&sa); err != nil {
			t.Fatal(err)
		}
		if err := b.Snapshot(&sb); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sa.Bytes(), sb.Bytes()) {
			t.Fatal("the billing states differ")
		}
	})
}

func TestFirstCopyUsageQuery(t *testing.T) {
	cases := []struct {
		name     string
		from, to Offsets
		ok       bool
		// what the two range conditions and the look-back bind, in order
		rangeArgs, belowArgs []any
	}{
		{"nothing new", Offsets{0: 5, 1: 9}, Offsets{0: 5, 1: 9}, false, nil, nil},
		{"first tick", Offsets{}, Offsets{1: 4, 0: 7}, true,
			[]any{int32(0), int64(0), int64(7), int32(1), int64(0), int64(4)}, []any{int32(0), int64(7), int32(1), int64(4)}},
		// partition 0 has nothing new but still bounds the look-back for first copies
		{"one partition moved", Offsets{0: 5, 1: 2}, Offsets{0: 5, 1: 9}, true,
			[]any{int32(1), int64(2), int64(9)}, []any{int32(0), int64(5), int32(1), int64(9)}},
		{"new partition", Offsets{0: 5}, Offsets{0: 5, 2: 3}, true,
			[]any{int32(2), int64(0), int64(3)}, []any{int32(0), int64(5), int32(2), int64(3)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, args, ok := firstCopyUsageQuery(c.from, c.to, nil)
			if ok != c.ok {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			if n := strings.Count(q, "?"); n != len(args) {
				t.Fatalf("%d placeholders, %d args", n, len(args))
			}
			want := append(append(append([]any{}, c.rangeArgs...), c.belowArgs...), c.rangeArgs...)
			if fmt.Sprint(args) != fmt.Sprint(want) {
				t.Fatalf("args %v; want %v", args, want)
			}
			for i := range args {
				if fmt.Sprintf("%T", args[i]) != fmt.Sprintf("%T", want[i]) {
					t.Fatalf("arg %d is %T; want %T", i, args[i], want[i])
				}
			}
			// First copies: one row per identity, the earliest received, before the range is cut.
			for _, must := range []string{"LIMIT 1 BY account, service, period, id", "ORDER BY received_at, kafka_partition, kafka_offset\n\t\t\tLIMIT 1 BY"} {
				if !strings.Contains(q, must) {
					t.Fatalf("query lacks %q:\n%s", must, q)
				}
			}
			if q2, _, _ := firstCopyUsageQuery(c.from, c.to, nil); q2 != q {
				t.Fatal("the same offsets gave two query texts")
			}
		})
	}
}
