package settle

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

// randomMonthLog builds a random October 2026 of several accounts: usage (with exact retries),
// activations, prepaid packs and contract prices, all recorded before October's settlement.
// It returns the log's lines, so callers can reorder them.
func randomMonthLog(r *rand.Rand) []string {
	var b logBuilder
	services := DefaultCatalogue().ServiceIDs()
	day := func() string {
		return fmt.Sprintf("2026-10-%02dT%02d:%02d:00+08:00", 1+r.IntN(31), r.IntN(24), r.IntN(60))
	}
	for a := range 1 + r.IntN(5) {
		acct := fmt.Sprintf("acct-%d", a)
		for _, svc := range services {
			if r.IntN(3) == 0 {
				continue
			}
			if r.IntN(2) == 0 {
				b.activate(acct, svc, fmt.Sprintf("2026-%02d-15T00:00:00+08:00", 9+r.IntN(2)))
			}
			if r.IntN(3) == 0 && !DefaultCatalogue().IsBeta(svc, mustTime("2026-10-01T00:00:00Z")) {
				for p := range 1 + r.IntN(2) {
					from := fmt.Sprintf("2026-10-%02dT00:00:00+08:00", 1+r.IntN(20))
					to := fmt.Sprintf("2026-%02d-%02dT00:00:00+08:00", 10+r.IntN(2), 21+r.IntN(8))
					b.pack(acct, svc, fmt.Sprintf("%s-%s-%d", acct, svc, p), int64(1+r.IntN(300_000)), from, to, "2026-09-30T00:00:00+08:00")
				}
			}
			if r.IntN(4) == 0 {
				b.override(acct, svc, "2026-09-01T00:00:00+08:00", "2026-09-01T00:00:00+08:00", 0, "1.7", 500_000, "0.9")
			}
			for e := range 1 + r.IntN(6) {
				id := fmt.Sprintf("%s-%s-%d", acct, svc, e)
				calls := int64(1 + r.IntN(1_000_000))
				at := day()
				b.usage(id, acct, svc, calls, at)
				if r.IntN(4) == 0 {
					b.usage(id, acct, svc, calls, at) // a gateway retry
				}
			}
		}
	}
	return strings.SplitAfter(strings.TrimSuffix(b.String(), "\n"), "\n")
}

// Replaying the same log twice gives byte-identical output.
func TestPropertyReplayIsDeterministic(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 1))
		log := strings.Join(randomMonthLog(r), "")
		first, _, _ := replayLog(t, log, until("2026-12-01T00:00:00+08:00"))
		second, _, _ := replayLog(t, log, until("2026-12-01T00:00:00+08:00"))
		if first != second || first == "" {
			t.Fatalf("seed %d: two replays of one log differ (or are empty)", seed)
		}
	}
}

// Shuffling the events of a month before its settlement changes nothing.
func TestPropertyOrderWithinAMonthDoesNotMatter(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 2))
		lines := randomMonthLog(r)
		want, _, _ := replayLog(t, strings.Join(lines, ""), until("2026-11-01T00:00:00+08:00"))
		for range 3 {
			r.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
			// Shuffled lines carry their own times as recordedat; the clock must not pass the
			// settlement instant early, which holds: every instant is in October or before.
			got, _, _ := replayLog(t, strings.Join(lines, "\n")+"\n", until("2026-11-01T00:00:00+08:00"))
			if got != want {
				t.Fatalf("seed %d: shuffled month billed differently\nwant %s\n got %s", seed, want, got)
			}
		}
	}
}

// Every line adds up: free + prepaid + billable = calls; the amount is billable × unit / 1000
// rounded half-up; the total is the sum of lines and adjustments; nothing is negative.
func TestPropertyLinesAddUp(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 3))
		_, evs, _ := replayLog(t, strings.Join(randomMonthLog(r), ""), until("2026-11-01T00:00:00+08:00"))
		for id, b := range bills(t, evs) {
			sum := decimal.Zero
			for _, l := range b.Lines {
				if l.FreeCalls+l.PrepaidCalls+l.BillableCalls != l.Calls || l.FreeCalls < 0 || l.PrepaidCalls < 0 || l.BillableCalls < 0 {
					t.Fatalf("seed %d %s: calls do not add up: %+v", seed, id, l)
				}
				if l.FreeCalls > 10_000 || (!l.Activated && l.FreeCalls != 0) {
					t.Fatalf("seed %d %s: free calls wrong: %+v", seed, id, l)
				}
				unit := decimal.RequireFromString(l.UnitPrice)
				want := decimal.NewFromInt(l.BillableCalls).Mul(unit).Div(decimal.NewFromInt(1000)).Round(2)
				if l.Amount != want.StringFixed(2) {
					t.Fatalf("seed %d %s: amount %s, want %s: %+v", seed, id, l.Amount, want.StringFixed(2), l)
				}
				sum = sum.Add(decimal.RequireFromString(l.Amount))
			}
			for _, a := range b.Adjustments {
				sum = sum.Add(decimal.RequireFromString(a.Amount))
			}
			if sum.StringFixed(2) != b.Total {
				t.Fatalf("seed %d %s: total %s, lines sum to %s", seed, id, b.Total, sum.StringFixed(2))
			}
		}
	}
}

// Splitting calls into more events (same month, no packs) does not change the bill.
func TestPropertySplittingEventsDoesNotChangeTheBill(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for range 50 {
		total := int64(1 + r.IntN(20_000_000))
		var one, many logBuilder
		for left, i := total, 0; left > 0; i++ {
			n := min(left, 1_000_000)
			one.usage(fmt.Sprintf("o%d", i), "a", "celebrity-recognition", n, "2026-10-01T00:00:00+08:00")
			left -= n
		}
		for left, i := total, 0; left > 0; i++ {
			n := min(left, int64(1+r.IntN(1_000_000)))
			many.usage(fmt.Sprintf("m%d", i), "a", "celebrity-recognition", n, fmt.Sprintf("2026-10-%02dT00:00:00+08:00", 1+r.IntN(31)))
			left -= n
		}
		a, _, _ := replayLog(t, one.String(), until("2026-11-01T00:00:00+08:00"))
		b, _, _ := replayLog(t, many.String(), until("2026-11-01T00:00:00+08:00"))
		if a != b {
			t.Fatalf("%d calls: one event vs many differ\n%s\n%s", total, a, b)
		}
	}
}

// FuzzReplay: no log crashes replay; every bad line is a rejection, never a failure.
func FuzzReplay(f *testing.F) {
	var b logBuilder
	b.activate("a", "image-tagging", "2026-09-01T00:00:00+08:00")
	b.usage("u1", "a", "image-tagging", 2_000, "2026-10-05T00:00:00+08:00")
	b.pack("a", "image-tagging", "p", 10, "2026-10-01T00:00:00+08:00", "2026-11-01T00:00:00+08:00", "2026-10-01T00:00:00+08:00")
	b.override("a", "image-tagging", "2026-10-01T00:00:00+08:00", "2026-10-01T00:00:00+08:00", 0, "1", 5, "0.5")
	b.holdReply(false, "a", "hold:a:2026-11", "2026-11-01T00:00:00+08:00")
	b.recharge("a", "1.5", "2026-11-02T00:00:00+08:00")
	for _, l := range strings.Split(b.String(), "\n") {
		f.Add([]byte(l))
	}
	prefix := b.String()
	f.Fuzz(func(t *testing.T, line []byte) {
		var out, rej bytes.Buffer
		log := prefix + string(line) + "\n"
		if _, err := Replay(strings.NewReader(log), &out, &rej, defaultConfig(), until("2027-01-01T00:00:00+08:00")); err != nil {
			t.Fatalf("replay failed instead of rejecting: %v", err)
		}
	})
}
