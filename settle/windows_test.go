package settle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// historyLine is one line of a random history; usage lines carry their event, so a test can feed
// them the way the settle worker does (first copies only, as totals or summaries).
type historyLine struct {
	raw      string
	usage    *contract.Usage
	recorded time.Time
	retry    bool // a gateway's retry of an earlier usage event
}

// randomHistory builds September to November 2026 of a few accounts, in log order: usage (with
// retries, and late calls recorded after their month settled), activations, prepaid packs bought
// mid-way that cover past and future dates across months, and contract prices.
func randomHistory(r *rand.Rand) []historyLine {
	cfg := defaultConfig()
	var services []string // those prepaid packs can be bought for
	for _, id := range DefaultCatalogue().ServiceIDs() {
		if !DefaultCatalogue().IsBeta(id, mustTime("2026-10-01T00:00:00Z")) && len(services) < 4 {
			services = append(services, id)
		}
	}
	start := mustTime("2026-09-01T00:00:00+08:00")
	instant := func(days float64) time.Time { return start.Add(time.Duration(days * 24 * float64(time.Hour))) }
	var lines []historyLine
	add := func(recorded time.Time, typ, id string, at time.Time, data map[string]any, u *contract.Usage, retry bool) {
		m := map[string]any{"specversion": "1.0", "id": id, "source": "test", "type": typ, "time": cloudevent.FormatTime(at.In(cfg.Location)),
			"recordedat": cloudevent.FormatTime(recorded.In(cfg.Location)), "data": data}
		raw, err := json.Marshal(m)
		if err != nil {
			panic(err)
		}
		lines = append(lines, historyLine{raw: string(raw) + "\n", usage: u, recorded: recorded, retry: retry})
	}
	n := 0
	for a := range 1 + r.IntN(4) {
		acct := fmt.Sprintf("acct-%d", a)
		for _, svc := range services {
			if r.IntN(4) == 0 {
				continue
			}
			if r.IntN(2) == 0 {
				at := instant(r.Float64() * 60)
				n++
				add(at, contract.ActivatedType, fmt.Sprintf("act-%d", n), at, map[string]any{"account": acct, "service": svc}, nil, false)
			}
			for p := range r.IntN(4) {
				bought := instant(r.Float64() * 80)
				from := instant(r.Float64() * 70)
				until := from.Add(time.Duration(1+r.IntN(40*24)) * time.Hour)
				n++
				add(bought, contract.PackPurchasedType, fmt.Sprintf("pack-ev-%d", n), bought, map[string]any{"account": acct, "service": svc,
					"pack_id": fmt.Sprintf("%s-%s-%d", acct, svc, p), "calls": 1 + r.IntN(400_000),
					"valid_from": cloudevent.FormatTime(from), "valid_until": cloudevent.FormatTime(until)}, nil, false)
			}
			if r.IntN(5) == 0 {
				at := instant(r.Float64() * 60)
				n++
				add(at, contract.PriceOverrideType, fmt.Sprintf("po-%d", n), at, map[string]any{"account": acct, "service": svc,
					"effective_from": "2026-10-01T00:00:00+08:00", "tiers": []map[string]any{{"from_calls": 0, "unit_price": "1.3"}, {"from_calls": 300_000, "unit_price": "0.7"}}}, nil, false)
			}
			for e := range 1 + r.IntN(12) {
				at := instant(r.Float64() * 88)
				recorded := at.Add(time.Duration(r.IntN(120)) * time.Second)
				if r.IntN(6) == 0 {
					recorded = at.Add(time.Duration(1+r.IntN(20)) * 24 * time.Hour) // late: its month may be settled
				}
				u := &contract.Usage{ID: fmt.Sprintf("%s-%s-%d", acct, svc, e), Account: acct, Service: svc, Calls: int64(1 + r.IntN(200_000)), Time: at}
				data := map[string]any{"account": acct, "service": svc, "calls": u.Calls}
				add(recorded, contract.UsageType, u.ID, at, data, u, false)
				if r.IntN(4) == 0 {
					add(recorded.Add(time.Duration(r.IntN(3600))*time.Second), contract.UsageType, u.ID, at, data, u, true)
				}
			}
		}
	}
	slices.SortStableFunc(lines, func(x, y historyLine) int { return x.recorded.Compare(y.recorded) })
	// A retry recorded before its first copy would be the first copy: keep the flag on the later one.
	seen := map[string]bool{}
	for i := range lines {
		if u := lines[i].usage; u != nil {
			key := u.Account + "/" + u.Service + "/" + u.ID
			lines[i].retry = seen[key]
			seen[key] = true
		}
	}
	return lines
}

// fedUsage is the usage a totals-only engine was given, and reads back its windows as the settle
// worker's usage_events query does.
type fedUsage struct {
	events []contract.Usage
	reads  int
}

func (f *fedUsage) windows(reqs []WindowRequest) ([][]CallsAt, error) {
	f.reads++
	out := make([][]CallsAt, len(reqs))
	for i, q := range reqs {
		sums := map[int]*CallsAt{}
		for _, u := range f.events {
			if u.Account != q.Account || u.Service != q.Service || !u.Time.Before(q.End) {
				continue
			}
			k := boundsAtOrBefore(q.Bounds, u.Time)
			c := sums[k]
			if c == nil {
				c = &CallsAt{At: u.Time}
				sums[k] = c
			}
			c.Calls += u.Calls
			if u.Time.Before(c.At) {
				c.At = u.Time
			}
		}
		for _, c := range sums { // map order: the engine must not rely on the order of the windows
			out[i] = append(out[i], *c)
		}
	}
	return out, nil
}

// boundsAtOrBefore is how many bounds lie at or before t.
func boundsAtOrBefore(bounds []time.Time, t time.Time) int {
	n := 0
	for _, b := range bounds {
		if !b.After(t) {
			n++
		}
	}
	return n
}

// replayTotalsOnly feeds a history to a totals-only engine as the settle worker does: first
// copies only, and with summaries, each run of usage lines between other lines as one summary per
// (account, service, month) wherever CanSummarize allows.
func replayTotalsOnly(t *testing.T, lines []historyLine, summaries bool, end time.Time) (out string, windowReads, summarized int) {
	t.Helper()
	cfg := defaultConfig()
	fed := &fedUsage{}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	rep, err := NewReplayer(cfg, ReplayOptions{UsageDeduplicated: true, UsageWindows: fed.windows}, func(o cloudevent.Out) error { return enc.Encode(o) })
	if err != nil {
		t.Fatal(err)
	}
	one := func(l historyLine) {
		if err := rep.Line([]byte(l.raw)); err != nil {
			t.Fatalf("line %s: %v", l.raw, err)
		}
		if l.usage != nil {
			fed.events = append(fed.events, *l.usage)
		}
	}
	var batch []historyLine
	flush := func() {
		defer func() { batch = batch[:0] }()
		if len(batch) == 0 {
			return
		}
		first, last := batch[0].usage.Time, batch[0].recorded
		for _, l := range batch {
			first, last = minTime(first, l.usage.Time), maxTime(last, l.recorded)
		}
		if !summaries || !rep.CanSummarize(first, last) {
			for _, l := range batch {
				one(l)
			}
			return
		}
		summarized++
		type key struct {
			account, service string
			period           contract.Period
		}
		groups := map[key][]historyLine{}
		var order []key
		for _, l := range batch {
			k := key{l.usage.Account, l.usage.Service, contract.PeriodOf(l.usage.Time, cfg.Location)}
			if groups[k] == nil {
				order = append(order, k)
			}
			groups[k] = append(groups[k], l)
		}
		for _, k := range order {
			var s contract.UsageSummary
			for _, l := range groups[k] {
				s.Add(*l.usage, l.recorded)
			}
			ok, err := rep.UsageSummary(s)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				t.Fatalf("summary of plain events refused: %+v", s)
			}
			for _, l := range groups[k] {
				fed.events = append(fed.events, *l.usage)
			}
		}
	}
	for _, l := range lines {
		if l.retry {
			continue // usage_events answers first copies only
		}
		if l.usage != nil {
			batch = append(batch, l)
			continue
		}
		flush()
		one(l)
	}
	flush()
	if err := rep.Advance(end); err != nil {
		t.Fatal(err)
	}
	return buf.String(), fed.reads, summarized
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Bills from month totals and windows read back at settlement equal bills from the per-event
// replay, for random histories with packs across months, late calls and retries; and so do bills
// from summaries of many events each.
func TestPropertyTotalsAndWindowsBillAsEveryEvent(t *testing.T) {
	end := mustTime("2026-12-05T00:00:00+08:00")
	reads, summarized := 0, 0
	for seed := range uint64(150) {
		lines := randomHistory(rand.New(rand.NewPCG(seed, 11)))
		var log strings.Builder
		for _, l := range lines {
			log.WriteString(l.raw)
		}
		want, _, rej := replayLog(t, log.String(), ReplayOptions{Until: end})
		if rej != "" {
			t.Fatalf("seed %d: the generator wrote rejected lines: %s", seed, rej)
		}
		for _, summaries := range []bool{false, true} {
			got, n, m := replayTotalsOnly(t, lines, summaries, end)
			if got != want {
				t.Fatalf("seed %d (summaries %v): totals and windows billed differently\nwant %s\n got %s", seed, summaries, want, got)
			}
			reads, summarized = reads+n, summarized+m
		}
	}
	if reads == 0 || summarized == 0 {
		t.Fatalf("the generator exercised too little: %d window reads, %d batches summarized", reads, summarized)
	}
}

// A read-back that does not add up to the totals fed fails the settlement: it names the month.
func TestWindowsThatDisagreeWithTotalsFailTheSettlement(t *testing.T) {
	cfg := defaultConfig()
	short := func(reqs []WindowRequest) ([][]CallsAt, error) {
		return [][]CallsAt{{{At: mustTime("2026-10-05T00:00:00+08:00"), Calls: 10}}}, nil
	}
	rep, err := NewReplayer(cfg, ReplayOptions{UsageDeduplicated: true, UsageWindows: short}, func(cloudevent.Out) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var b logBuilder
	b.pack("a", "image-tagging", "p1", 100, "2026-10-01T00:00:00+08:00", "2026-11-01T00:00:00+08:00", "2026-10-01T00:00:00+08:00")
	b.usage("u1", "a", "image-tagging", 50, "2026-10-05T00:00:00+08:00")
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if err := rep.Line([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	err = rep.Advance(mustTime("2026-11-02T00:00:00+08:00"))
	if err == nil || !strings.Contains(err.Error(), "2026-10") || !strings.Contains(err.Error(), "add up to 10, the month's total is 50") {
		t.Fatalf("settlement with short windows: %v", err)
	}
}
