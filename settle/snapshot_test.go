package settle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// randomQuarterLog is a random September–December 2026 of a few accounts, in the order a live
// worker records it: usage (retries, and late calls recorded after their month settled),
// activations, packs, contract prices, and ledger replies to the holds settlements request.
func randomQuarterLog(r *rand.Rand) []string {
	type line struct {
		at  time.Time
		raw string
	}
	var lines []line
	add := func(typ, id string, at, recorded time.Time, data map[string]any) {
		m := map[string]any{"specversion": "1.0", "id": id, "source": "test", "type": typ, "time": at.Format(time.RFC3339), "data": data,
			"recordedat": recorded.Format(time.RFC3339)}
		raw, _ := json.Marshal(m)
		lines = append(lines, line{recorded, string(raw)})
	}
	loc := time.FixedZone("CST", 8*3600)
	start := time.Date(2026, 9, 1, 0, 0, 0, 0, loc)
	when := func(days int) time.Time {
		return start.Add(time.Duration(r.Int64N(int64(days) * int64(24*time.Hour))).Truncate(time.Minute))
	}
	services := []string{"image-tagging", "vehicle-recognition", "smart-cropping"}
	n := 0
	for a := range 1 + r.IntN(4) {
		acct := fmt.Sprintf("acct-%d", a)
		for _, svc := range services {
			if r.IntN(2) == 0 {
				at := when(100)
				add(contract.ActivatedType, fmt.Sprintf("act-%s-%s", acct, svc), at, at, map[string]any{"account": acct, "service": svc})
			}
			if r.IntN(3) == 0 {
				from := when(80)
				add(contract.PackPurchasedType, fmt.Sprintf("buy-%s-%s", acct, svc), from, from, map[string]any{"account": acct, "service": svc,
					"pack_id": fmt.Sprintf("pk-%s-%s", acct, svc), "calls": 1 + r.IntN(200_000), "valid_from": from.Format(time.RFC3339),
					"valid_until": from.AddDate(0, 1+r.IntN(2), 0).Format(time.RFC3339)})
			}
			if r.IntN(4) == 0 {
				at := when(100)
				add(contract.PriceOverrideType, fmt.Sprintf("po-%s-%s", acct, svc), at, at, map[string]any{"account": acct, "service": svc,
					"effective_from": at.Format(time.RFC3339), "tiers": []map[string]any{{"from_calls": 0, "unit_price": "1.7"}, {"from_calls": 300_000, "unit_price": "0.9"}}})
			}
			for range 1 + r.IntN(8) {
				n++
				at := when(110)
				recorded := at
				if r.IntN(6) == 0 {
					recorded = at.AddDate(0, 1, r.IntN(20)) // late: its month has settled
				}
				data := map[string]any{"account": acct, "service": svc, "calls": 1 + r.IntN(400_000)}
				add("tally.usage.v1", fmt.Sprintf("u%d", n), at, recorded, data)
				if r.IntN(5) == 0 {
					add("tally.usage.v1", fmt.Sprintf("u%d", n), at, recorded.Add(time.Hour), data) // a gateway retry
				}
			}
		}
		for m := 10; m <= 12; m++ { // replies to the hold each settlement requests
			holdID := fmt.Sprintf("hold:%s:2026-%02d", acct, m)
			at := time.Date(2026, time.Month(m), 1, 1+r.IntN(20), 0, 0, 0, loc)
			switch r.IntN(3) {
			case 0:
				add(contract.HoldPlacedType, "hp-"+holdID, at, at, map[string]any{"account": acct, "hold_id": holdID})
			case 1:
				add(contract.HoldFailedType, "hf-"+holdID, at, at, map[string]any{"account": acct, "hold_id": holdID})
				later := at.Add(time.Duration(1+r.IntN(72)) * time.Hour)
				add(contract.RechargedType, "rc-"+holdID, later, later, map[string]any{"account": acct, "amount": "500.00"})
				add(contract.HoldPlacedType, "hp2-"+holdID, later.Add(time.Hour), later.Add(time.Hour), map[string]any{"account": acct, "hold_id": holdID})
			}
		}
	}
	slices.SortStableFunc(lines, func(x, y line) int { return x.at.Compare(y.at) })
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.raw
	}
	return out
}

func replayWhole(t *testing.T, cfg Config, lines []string, until time.Time) []byte {
	t.Helper()
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	rep, err := NewReplayer(cfg, ReplayOptions{Grace: 6 * time.Hour}, func(o cloudevent.Out) error { return enc.Encode(o) })
	if err != nil {
		t.Fatal(err)
	}
	apply(t, rep, lines)
	if err := rep.Advance(until); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func apply(t *testing.T, rep *Replayer, lines []string) {
	t.Helper()
	for _, l := range lines {
		var rej *Rejection
		if err := rep.Line([]byte(l)); err != nil && !errors.As(err, &rej) {
			t.Fatal(err)
		}
	}
}

// Stopping anywhere, snapshotting, restoring and going on emits exactly what one uninterrupted
// replay emits; and a restored state snapshots to the same bytes.
func TestPropertySnapshotRestoreIsInvisible(t *testing.T) {
	cfg := defaultConfig()
	cfg.HoldRatio = decimal.RequireFromString("1.2")
	until := mustTime("2027-01-05T00:00:00+08:00")
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 9))
		lines := randomQuarterLog(r)
		want := replayWhole(t, cfg, lines, until)
		for _, cut := range []int{0, r.IntN(len(lines) + 1), r.IntN(len(lines) + 1), len(lines)} {
			var out bytes.Buffer
			enc := json.NewEncoder(&out)
			emit := func(o cloudevent.Out) error { return enc.Encode(o) }
			first, err := NewReplayer(cfg, ReplayOptions{Grace: 6 * time.Hour}, emit)
			if err != nil {
				t.Fatal(err)
			}
			apply(t, first, lines[:cut])
			var snap bytes.Buffer
			if err := first.Snapshot(&snap); err != nil {
				t.Fatal(err)
			}
			restored, err := RestoreReplayer(cfg, ReplayOptions{Grace: 6 * time.Hour}, emit, bytes.NewReader(snap.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			var again bytes.Buffer
			if err := restored.Snapshot(&again); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(snap.Bytes(), again.Bytes()) {
				t.Fatalf("seed %d, cut %d: a restored state snapshots differently", seed, cut)
			}
			apply(t, restored, lines[cut:])
			if err := restored.Advance(until); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("seed %d, cut %d of %d: output differs after restoring\n got %s\nwant %s", seed, cut, len(lines), out.Bytes(), want)
			}
		}
	}
}

// The generated quarters exercise what snapshots must carry: suspensions, resumptions, late
// adjustments, packs and holds.
func TestRandomQuarterLogCoversTheStateMachine(t *testing.T) {
	seen := map[string]bool{}
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 9))
		out := replayWhole(t, defaultConfig(), randomQuarterLog(r), mustTime("2027-01-05T00:00:00+08:00"))
		for _, typ := range []string{contract.AccountSuspendedType, contract.AccountResumedType, contract.HoldReleasedType, `"adjustments":[{`, `"prepaid_calls":1`} {
			if bytes.Contains(out, []byte(typ)) {
				seen[typ] = true
			}
		}
	}
	if len(seen) != 5 {
		t.Fatalf("the generator misses some of the state machine: saw only %v", seen)
	}
}

// A snapshot taken under another catalogue or hold ratio is refused, not misread.
func TestSnapshotRefusesAnotherConfiguration(t *testing.T) {
	cfg := defaultConfig()
	rep, err := NewReplayer(cfg, ReplayOptions{}, func(cloudevent.Out) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	apply(t, rep, randomQuarterLog(rand.New(rand.NewPCG(1, 1))))
	var snap bytes.Buffer
	if err := rep.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.HoldRatio = decimal.RequireFromString("1.5")
	if _, err := RestoreReplayer(other, ReplayOptions{}, func(cloudevent.Out) error { return nil }, bytes.NewReader(snap.Bytes())); !errors.Is(err, ErrSnapshotMismatch) {
		t.Fatalf("restored under another hold ratio: %v", err)
	}
	if _, err := RestoreReplayer(cfg, ReplayOptions{}, func(cloudevent.Out) error { return nil }, bytes.NewReader(snap.Bytes()[:snap.Len()/2])); err == nil {
		t.Fatal("restored a truncated snapshot")
	}
}

// Over a log holding each usage identity once, an engine that does not remember usage ids emits
// exactly what one that does emits, and its snapshots hold no ids.
func TestUsageDeduplicatedLogNeedsNoIDs(t *testing.T) {
	until := mustTime("2027-01-05T00:00:00+08:00")
	for seed := range uint64(30) {
		lines := randomQuarterLog(rand.New(rand.NewPCG(seed, 9)))
		var once []string // the log without its gateway retries
		seen := map[string]bool{}
		for _, l := range lines {
			var ev struct {
				ID   string
				Type string
			}
			_ = json.Unmarshal([]byte(l), &ev)
			if ev.Type == "tally.usage.v1" {
				if seen[ev.ID] {
					continue
				}
				seen[ev.ID] = true
			}
			once = append(once, l)
		}
		if len(once) == len(lines) && seed == 0 {
			t.Fatal("the generated log has no retries to drop")
		}
		want := replayWhole(t, defaultConfig(), lines, until)
		var out bytes.Buffer
		enc := json.NewEncoder(&out)
		rep, err := NewReplayer(defaultConfig(), ReplayOptions{Grace: 6 * time.Hour, UsageDeduplicated: true}, func(o cloudevent.Out) error { return enc.Encode(o) })
		if err != nil {
			t.Fatal(err)
		}
		apply(t, rep, once)
		if err := rep.Advance(until); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("seed %d: output differs without remembered ids", seed)
		}
		for _, a := range rep.engine.accounts {
			for _, s := range a.services {
				for _, m := range s.months {
					if ids := m.ids.list(); len(ids) > 0 {
						t.Fatalf("seed %d: %s/%s remembers %d ids", seed, a.id, s.id, len(ids))
					}
				}
			}
		}
	}
}

// A damaged snapshot is an error, never a panic or a wrong state silently accepted as whole.
func FuzzRestoreSnapshot(f *testing.F) {
	for seed := range uint64(3) {
		rep, err := NewReplayer(defaultConfig(), ReplayOptions{}, func(cloudevent.Out) error { return nil })
		if err != nil {
			f.Fatal(err)
		}
		apply(&testing.T{}, rep, randomQuarterLog(rand.New(rand.NewPCG(seed, 9))))
		var snap bytes.Buffer
		if err := rep.Snapshot(&snap); err != nil {
			f.Fatal(err)
		}
		f.Add(snap.Bytes())
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		rep, err := RestoreReplayer(defaultConfig(), ReplayOptions{}, func(cloudevent.Out) error { return nil }, bytes.NewReader(raw))
		if err != nil {
			return
		}
		// Whatever was accepted must run: settle what is pending (a clock restored far in the
		// future would settle every month up to it, which is right and merely slow).
		if until := mustTime("2027-06-01T00:00:00+08:00"); !rep.clock.After(until) {
			_ = rep.Advance(until)
		}
	})
}
