package aggregate

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/settle"
)

var shanghai, _ = time.LoadLocation("Asia/Shanghai")

func rec(off int64, id, account, service string, calls int, at string) Record {
	happened, err := time.Parse(time.RFC3339, at)
	if err != nil {
		panic(err)
	}
	return Record{Offset: off, Time: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Value: contract.MustEncode(contract.Event{ID: id, Source: "test", Type: contract.UsageType,
		Time: happened, Data: contract.UsageData{Account: account, Service: service, Calls: int64(calls)}})}
}

func TestWindowForgetsTheOldest(t *testing.T) {
	w := NewWindow(3)
	for i, c := range []struct {
		id  string
		dup bool
	}{{"a", false}, {"b", false}, {"a", true}, {"c", false}, {"b", true}, {"", false}, {"", false}, {"c", false}} {
		if got := w.Seen(c.id); got != c.dup {
			t.Fatalf("step %d Seen(%q) = %v, want %v", i, c.id, got, c.dup)
		}
	}
	if w.Len() != 3 || len(w.count) != 1 {
		t.Fatalf("len %d, %d distinct ids remembered", w.Len(), len(w.count))
	}
}

func TestFoldDropsRetriesAndSortsMonths(t *testing.T) {
	p := NewPartition(PartitionConfig{Window: 100, Location: shanghai, Services: settle.DefaultCatalogue()}, nil, Mark{})
	p.Fold(rec(0, "e1", "acme", "image-tagging", 3, "2026-10-31T23:59:00+08:00"))
	p.Fold(rec(1, "e1", "acme", "image-tagging", 3, "2026-10-31T23:59:00+08:00")) // retry: dropped
	p.Fold(rec(2, "e1", "acme", "image-tagging", 5, "2026-10-31T16:30:00Z"))      // Nov 1 00:30 Shanghai: another month
	p.Fold(rec(3, "e2", "acme", "no-such-service", 5, "2026-10-31T16:30:00Z"))    // invalid: skipped
	p.Fold(Record{Offset: 4, Value: []byte("garbage"), Time: time.Now()})         // invalid
	p.Fold(rec(5, "e2", "acme", "image-tagging", 7, "2026-10-01T00:00:00+08:00")) // late but in October
	want := map[Key]int64{
		{"acme", "image-tagging", contract.Period{Year: 2026, Month: 10}}: 10,
		{"acme", "image-tagging", contract.Period{Year: 2026, Month: 11}}: 5,
	}
	if got := p.Totals(); !reflect.DeepEqual(got, want) {
		t.Fatalf("totals %v, want %v", got, want)
	}
	if f, d, i := p.Stats(); f != 3 || d != 1 || i != 2 || p.Next() != 6 {
		t.Fatalf("folded %d dup %d invalid %d next %d", f, d, i, p.Next())
	}
	if got := p.Account("acme", contract.Period{Year: 2026, Month: 10}); got["image-tagging"] != 10 {
		t.Fatalf("account view %v", got)
	}
}

// With Home set, Fold reports a record of an account homed on another partition (folded all
// the same, retries included), and nothing for the partition's own accounts or invalid records.
func TestFoldReportsMisroutedRecords(t *testing.T) {
	home := map[string]int{"acme": 0, "globex": 1}
	p := NewPartition(PartitionConfig{Window: 100, Location: shanghai, Services: settle.DefaultCatalogue(), ID: 0,
		Home: func(account string) int { return home[account] }}, nil, Mark{})
	for i, c := range []struct {
		r       Record
		want    bool
		account string
	}{
		{rec(0, "e1", "acme", "image-tagging", 3, "2026-10-05T10:00:00+08:00"), false, ""},
		{rec(1, "g1", "globex", "image-tagging", 4, "2026-10-05T10:00:00+08:00"), true, "globex"},
		{rec(2, "g1", "globex", "image-tagging", 4, "2026-10-05T10:00:00+08:00"), true, "globex"}, // a retry of it, here too
		{Record{Offset: 3, Value: []byte("garbage"), Time: time.Now()}, false, ""},
	} {
		misrouted, account, per := p.Fold(c.r)
		if misrouted != c.want || account != c.account || (misrouted && per != (contract.Period{Year: 2026, Month: 10})) {
			t.Errorf("record %d: misrouted %v %q %v", i, misrouted, account, per)
		}
	}
	if got := p.Account("globex", contract.Period{Year: 2026, Month: 10}); got["image-tagging"] != 4 {
		t.Fatalf("globex's partial total here: %v", got)
	}
}

// A restart from any checkpoint, with the window rebuilt from the records before it, ends with
// exactly the totals of a run that never stopped.
func TestPropertyRestartFromCheckpointIsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for round := range 40 {
		var recs []Record
		for i := range 400 {
			id := fmt.Sprintf("e%d", i)
			if i > 0 && r.IntN(4) == 0 {
				id = fmt.Sprintf("e%d", i-1-r.IntN(min(i, 30))) // a retry up to 30 records later
			}
			recs = append(recs, rec(int64(i), id, fmt.Sprintf("a%d", r.IntN(3)), "smart-cropping", 1+r.IntN(5),
				fmt.Sprintf("2026-%02d-1%dT00:00:00+08:00", 10+r.IntN(2), r.IntN(9))))
		}
		const window = 16
		whole := NewPartition(PartitionConfig{Window: window, Location: shanghai, Services: settle.DefaultCatalogue()}, nil, Mark{})
		for _, x := range recs {
			whole.Fold(x)
		}
		// Crash after checkpoint c: the checkpoint holds every total as of c.
		c := 1 + r.IntN(len(recs)-1)
		first := NewPartition(PartitionConfig{Window: window, Location: shanghai, Services: settle.DefaultCatalogue()}, nil, Mark{})
		for _, x := range recs[:c] {
			first.Fold(x)
		}
		saved, mark := first.TakeDirty()
		at := mark.Next
		restarted := NewPartition(PartitionConfig{Window: window, Location: shanghai, Services: settle.DefaultCatalogue()}, saved, mark)
		for _, x := range recs[max(0, int(at)-window):at] {
			restarted.Warm(x)
		}
		for _, x := range recs[at:] {
			restarted.Fold(x)
		}
		if !reflect.DeepEqual(whole.Totals(), restarted.Totals()) {
			t.Fatalf("round %d, checkpoint at %d: totals differ\nwhole     %v\nrestarted %v", round, c, whole.Totals(), restarted.Totals())
		}
	}
}

// With OpenMonths, months older than the newest receive month's window close: their records are
// not folded and their totals leave memory. All of it follows from the records alone, so a
// restart from any checkpoint still ends with exactly the totals of a run that never stopped.
func TestPropertyClosedMonthsAreExactAcrossRestarts(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	cfg := PartitionConfig{Window: 16, OpenMonths: 2, Location: shanghai, Services: settle.DefaultCatalogue()}
	open := func(p *Partition) map[Key]int64 {
		from := p.OpenFrom()
		out := map[Key]int64{}
		for k, v := range p.Totals() {
			if !k.Period.Before(from) {
				out[k] = v
			}
		}
		return out
	}
	for round := range 40 {
		// Received from September to December, each about a month's worth of late calls.
		var recs []Record
		want := map[Key]int64{}
		newest := contract.Period{}
		for i := range 400 {
			received := time.Date(2026, 9, 1, 0, 0, 0, 0, shanghai).Add(time.Duration(i) * 7 * time.Hour)
			happened := received.Add(-time.Duration(r.IntN(45*24)) * time.Hour)
			acct, calls := fmt.Sprintf("a%d", r.IntN(3)), 1+r.IntN(5)
			x := rec(int64(i), fmt.Sprintf("e%d", i), acct, "smart-cropping", calls, happened.Format(time.RFC3339))
			x.Time = received
			recs = append(recs, x)
			if p := contract.PeriodOf(received, shanghai); newest.Before(p) {
				newest = p
			}
			if per := contract.PeriodOf(happened, shanghai); !per.Before(newest.Prev()) {
				want[Key{acct, "smart-cropping", per}] += int64(calls)
			}
		}
		whole := NewPartition(cfg, nil, Mark{})
		for i, x := range recs {
			whole.Fold(x)
			if i%50 == 0 {
				whole.TakeDirty() // checkpoints now and then: closed months leave memory
			}
		}
		c := 1 + r.IntN(len(recs)-1)
		first := NewPartition(cfg, nil, Mark{})
		saved := map[Key]int64{}
		for i, x := range recs[:c] {
			first.Fold(x)
			if i%37 == 0 {
				changed, _ := first.TakeDirty()
				maps.Copy(saved, changed)
			}
		}
		changed, mark := first.TakeDirty()
		maps.Copy(saved, changed)
		restarted := NewPartition(cfg, saved, mark)
		for _, x := range recs[max(0, int(mark.Next)-cfg.Window):mark.Next] {
			restarted.Warm(x)
		}
		for _, x := range recs[mark.Next:] {
			restarted.Fold(x)
		}
		for k := range want {
			if k.Period.Before(whole.OpenFrom()) {
				delete(want, k)
			}
		}
		if !reflect.DeepEqual(open(whole), want) || !reflect.DeepEqual(open(restarted), want) {
			t.Fatalf("round %d, checkpoint at %d:\nwhole     %v\nrestarted %v\nwant      %v", round, c, open(whole), open(restarted), want)
		}
		if whole.OpenFrom() != (contract.Period{Year: 2026, Month: 11}) || whole.Closed() == 0 {
			t.Fatalf("round %d: open from %v, %d closed records", round, whole.OpenFrom(), whole.Closed())
		}
		for _, p := range []*Partition{whole, restarted} {
			p.TakeDirty()
			for k := range p.Totals() {
				if k.Period.Before(p.OpenFrom()) {
					t.Fatalf("round %d: closed total %v still held after a checkpoint", round, k)
				}
			}
		}
	}
}
