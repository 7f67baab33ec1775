package worker

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A write retried after a lost answer puts its records in the journal again: the walk keeps the
// first copy of each input and tick and drops the rest, wherever they land.
func TestJournalCopiesAreDropped(t *testing.T) {
	sep, oct := time.Date(2026, 9, 1, 1, 0, 0, 0, time.UTC), time.Date(2026, 10, 1, 1, 0, 0, 0, time.UTC)
	in := func(src string, off int64) Entry { return Entry{Source: src, Offset: off} }
	tick := func(at time.Time) Entry { return Entry{Tick: true, RecordedAt: at} }
	journal := []Entry{
		in("acc/0", 0), in("acc/0", 1), in("acc/0", 0), in("acc/0", 1), // a chunk written twice
		in("led/0", 5), tick(sep), tick(sep), // the first ledger input seen is at offset 5 (a snapshot's seed can say otherwise)
		in("acc/0", 2), in("led/0", 6), in("led/0", 5), tick(oct), in("acc/0", 2),
	}
	var kept []string
	c := &journalCopies{}
	for _, e := range journal {
		if !c.copied(e) {
			kept = append(kept, describe(e))
		}
	}
	want := "acc/0@0 acc/0@1 led/0@5 tick 2026-09 acc/0@2 led/0@6 tick 2026-10"
	if got := strings.Join(kept, " "); got != want {
		t.Fatalf("kept %q, want %q", got, want)
	}
	if c.dropped != 5 {
		t.Fatalf("dropped %d copies, want 5", c.dropped)
	}

	// Resuming after a snapshot: its inputs and tick are known, copies of them are dropped too.
	c = &journalCopies{next: map[string]int64{"acc/0": 3}, lastTick: oct}
	for _, e := range []Entry{in("acc/0", 2), tick(oct), tick(sep)} {
		if !c.copied(e) {
			t.Errorf("%s, from before the snapshot, kept", describe(e))
		}
	}
	for _, e := range []Entry{in("acc/0", 3), in("led/0", 0), tick(oct.AddDate(0, 1, 0)), {Line: []byte("{}")}} {
		if c.copied(e) {
			t.Errorf("%s, new after the snapshot, dropped", describe(e))
		}
	}
}

func describe(e Entry) string {
	switch {
	case e.Tick:
		return "tick " + e.RecordedAt.Format("2006-01")
	case e.Source != "":
		return fmt.Sprintf("%s@%d", e.Source, e.Offset)
	}
	return "other"
}
