package settle

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
)

// quoteHistory is a random (account, service) history over September–November 2026 at a small
// scale (a free pack of 7 calls, packs of a few dozen) so a call-by-call oracle can check it.
type quoteHistory struct {
	terms []Input
	calls []CallsAt
	free  int64
}

func randomQuoteHistory(r *rand.Rand, loc *time.Location) quoteHistory {
	const acct, svc = "acct", "image-tagging"
	at := func(from time.Time, days int) time.Time {
		return from.Add(time.Duration(r.Int64N(int64(days) * int64(24*time.Hour))).Truncate(time.Minute))
	}
	aug20 := time.Date(2026, 8, 20, 0, 0, 0, 0, loc)
	sep1 := time.Date(2026, 9, 1, 0, 0, 0, 0, loc)
	h := quoteHistory{free: 7}
	if r.IntN(3) > 0 {
		h.terms = append(h.terms, Activation{Account: acct, Service: svc, At: at(aug20, 100)})
	}
	var untils []time.Time
	for i := range r.IntN(4) {
		from := at(aug20, 92)
		until := from.Add(time.Duration(1+r.IntN(60)) * 24 * time.Hour)
		if len(untils) > 0 && r.IntN(3) == 0 {
			until = untils[r.IntN(len(untils))] // a tie on expiry: the smaller pack id goes first
			if !from.Before(until) {
				from = until.Add(-time.Hour)
			}
		}
		untils = append(untils, until)
		h.terms = append(h.terms, PackPurchase{Account: acct, Service: svc, PackID: fmt.Sprintf("pack-%d", 9-i),
			Calls: int64(1 + r.IntN(40)), ValidFrom: from, ValidUntil: until})
	}
	if r.IntN(4) == 0 {
		h.terms = append(h.terms, PriceOverride{Account: acct, Service: svc, EffectiveFrom: aug20, Tiers: []Tier{NewTier(0, mustDecimal("1.7"))}})
	}
	for range 1 + r.IntN(14) {
		h.calls = append(h.calls, CallsAt{At: at(sep1, 91), Calls: int64(1 + r.IntN(20))})
	}
	return h
}

// oracle attributes the calls of months up to p one call at a time, straight from SPEC §4: the
// free pack covers the first calls of a month, then each call the valid pack expiring soonest
// (ties: smaller pack id) with calls left, else it is postpaid.
func (h quoteHistory) oracle(p contract.Period, asOf time.Time, loc *time.Location) (free, prepaid, left int64) {
	var activatedAt *time.Time
	type pk struct {
		PackPurchase
		left int64
	}
	var packs []*pk
	for _, in := range h.terms {
		switch in := in.(type) {
		case Activation:
			if activatedAt == nil {
				activatedAt = &in.At
			}
		case PackPurchase:
			packs = append(packs, &pk{in, in.Calls})
		}
	}
	sort.Slice(packs, func(i, j int) bool {
		if !packs[i].ValidUntil.Equal(packs[j].ValidUntil) {
			return packs[i].ValidUntil.Before(packs[j].ValidUntil)
		}
		return packs[i].PackID < packs[j].PackID
	})
	var times []time.Time
	for _, c := range h.calls {
		for range c.Calls {
			times = append(times, c.At)
		}
	}
	slices.SortStableFunc(times, time.Time.Compare)
	usedFree := map[contract.Period]int64{}
	for _, t := range times {
		m := contract.PeriodOf(t, loc)
		if p.Before(m) {
			break
		}
		covered := "postpaid"
		if activatedAt != nil && activatedAt.Before(m.End(loc)) && usedFree[m] < h.free {
			usedFree[m]++
			covered = "free"
		} else {
			for _, k := range packs {
				if k.left > 0 && !t.Before(k.ValidFrom) && t.Before(k.ValidUntil) {
					k.left--
					covered = "prepaid"
					break
				}
			}
		}
		if m == p {
			switch covered {
			case "free":
				free++
			case "prepaid":
				prepaid++
			}
		}
	}
	for _, k := range packs {
		if k.ValidUntil.After(asOf) && k.ValidFrom.Before(p.End(loc)) {
			left += k.left
		}
	}
	return free, prepaid, left
}

// bucketed counts the calls per (month, pack window), as the usage API reads them from ClickHouse.
func (h quoteHistory) bucketed(loc *time.Location) []CallsAt {
	bounds := PackWindowBounds(h.terms)
	sums := map[time.Time]int64{}
	for _, c := range h.calls {
		seg := sort.Search(len(bounds), func(i int) bool { return c.At.Before(bounds[i]) })
		start := contract.PeriodOf(c.At, loc).Start(loc)
		if seg > 0 && bounds[seg-1].After(start) {
			start = bounds[seg-1]
		}
		sums[start] += c.Calls
	}
	var out []CallsAt
	for at, n := range sums {
		out = append(out, CallsAt{At: at, Calls: n})
	}
	return out
}

// QuoteUsage attributes calls exactly as a call-by-call reading of the rules does, and gives the
// same answer from calls bucketed by pack windows.
func TestPropertyQuoteUsageMatchesCallByCallOracle(t *testing.T) {
	cfg := defaultConfig()
	cat := *cfg.Catalogue
	cat.FreeCallsPerMonth = 7
	cfg.Catalogue = &cat
	months := []contract.Period{{Year: 2026, Month: 9}, {Year: 2026, Month: 10}, {Year: 2026, Month: 11}}
	for seed := range uint64(400) {
		r := rand.New(rand.NewPCG(seed, 5))
		h := randomQuoteHistory(r, cfg.Location)
		h.free = cat.FreeCallsPerMonth
		for _, p := range months {
			asOf := p.Start(cfg.Location).Add(time.Duration(r.Int64N(int64(30 * 24 * time.Hour))))
			free, prepaid, left := h.oracle(p, asOf, cfg.Location)
			for _, calls := range [][]CallsAt{h.calls, h.bucketed(cfg.Location)} {
				q, err := QuoteUsage(cfg, UsageQuoteRequest{Account: "acct", Service: "image-tagging", Period: p, Terms: h.terms, Calls: calls, AsOf: asOf})
				if err != nil {
					t.Fatal(err)
				}
				if q.Line.FreeCalls != free || q.Line.PrepaidCalls != prepaid || q.PrepaidCallsLeft != left {
					t.Fatalf("seed %d, %s: free %d prepaid %d left %d, oracle %d %d %d\nterms %+v\ncalls %+v",
						seed, p, q.Line.FreeCalls, q.Line.PrepaidCalls, q.PrepaidCallsLeft, free, prepaid, left, h.terms, calls)
				}
			}
		}
	}
}

// A quote's line is the line settlement bills for the month, when everything is known in time.
func TestPropertyQuoteUsageIsTheBillLine(t *testing.T) {
	cfg := defaultConfig()
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 6))
		h := randomQuoteHistory(r, cfg.Location)
		for i := range h.calls {
			h.calls[i].Calls *= 4_000 // past the real free pack, into higher tiers
		}
		var b logBuilder
		type entry struct {
			at   time.Time
			emit func()
		}
		termsAt := "2026-08-01T00:00:00+08:00"
		var log []entry
		for _, in := range h.terms {
			switch in := in.(type) {
			case Activation:
				log = append(log, entry{in.At, func() { b.activate("acct", "image-tagging", in.At.Format(time.RFC3339)) }})
			case PackPurchase:
				log = append(log, entry{mustTime(termsAt), func() {
					b.pack("acct", "image-tagging", in.PackID, in.Calls, in.ValidFrom.Format(time.RFC3339), in.ValidUntil.Format(time.RFC3339), termsAt)
				}})
			case PriceOverride:
				log = append(log, entry{mustTime(termsAt), func() {
					b.override("acct", "image-tagging", in.EffectiveFrom.Format(time.RFC3339), termsAt, 0, "1.7")
				}})
			}
		}
		for i, c := range h.calls {
			log = append(log, entry{c.At, func() { b.usage(fmt.Sprintf("u%d", i), "acct", "image-tagging", c.Calls, c.At.Format(time.RFC3339)) }})
		}
		slices.SortStableFunc(log, func(x, y entry) int { return x.at.Compare(y.at) })
		for _, e := range log {
			e.emit()
		}
		_, evs, rejected := replayLog(t, b.String(), until("2027-01-01T00:00:00+08:00"))
		if rejected != "" {
			t.Fatalf("seed %d: rejected %s", seed, rejected)
		}
		issued := bills(t, evs)
		for _, p := range []contract.Period{{Year: 2026, Month: 9}, {Year: 2026, Month: 10}, {Year: 2026, Month: 11}} {
			q, err := QuoteUsage(cfg, UsageQuoteRequest{Account: "acct", Service: "image-tagging", Period: p, Terms: h.terms, Calls: h.calls, AsOf: p.Start(cfg.Location)})
			if err != nil {
				t.Fatal(err)
			}
			bill, ok := issued[contract.BillID("acct", p.String())]
			if q.Line.Calls == 0 {
				if ok && len(bill.Lines) > 0 {
					t.Fatalf("seed %d, %s: a bill line for a month without calls: %+v", seed, p, bill)
				}
				continue
			}
			if !ok || len(bill.Lines) != 1 || len(bill.Adjustments) != 0 {
				t.Fatalf("seed %d, %s: want one line and no adjustment, got %+v", seed, p, bill)
			}
			if bill.Lines[0] != q.Line {
				t.Fatalf("seed %d, %s:\nbill  %+v\nquote %+v", seed, p, bill.Lines[0], q.Line)
			}
		}
	}
}
