package settle

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
)

func lineOf(t *testing.T, b contract.Bill, service string) contract.BillLine {
	t.Helper()
	for _, l := range b.Lines {
		if l.Service == service {
			return l
		}
	}
	t.Fatalf("bill %s has no line for %s: %+v", b.BillID, service, b.Lines)
	return contract.BillLine{}
}

func TestChargingStartsIn2020(t *testing.T) {
	var b logBuilder
	b.activate("a", "image-tagging", "2019-11-01T00:00:00+08:00")
	b.usage("u1", "a", "image-tagging", 500_000, "2019-12-31T23:59:59+08:00") // last second of the beta
	b.usage("u2", "a", "image-tagging", 500_000, "2019-12-31T16:00:00Z")      // = 2020-01-01 00:00 +08:00
	_, evs, _ := replayLog(t, b.String(), until("2020-02-01T00:00:00+08:00"))
	bs := bills(t, evs)
	dec := lineOf(t, bs["bill:a:2019-12"], "image-tagging")
	if dec.Tier != 0 || dec.UnitPrice != "0" || dec.Amount != "0.00" || dec.Calls != 500_000 {
		t.Fatalf("Dec 2019 (beta) line = %+v; want tier 0, price 0, amount 0.00", dec)
	}
	jan := lineOf(t, bs["bill:a:2020-01"], "image-tagging")
	// 490,000 × 2.5 / 1000
	if jan.Tier != 1 || jan.Amount != "1225.00" {
		t.Fatalf("Jan 2020 line = %+v; want tier 1, 1225.00", jan)
	}
	// The beta month's usage is free, so it holds nothing.
	for _, e := range evs {
		if e.ID == "tally.hold.requested.v1:hold:a:2020-01" {
			t.Fatalf("a hold was requested on a free month: %s", e.Data)
		}
	}
}

func TestBillingMonthFollowsTheBillingTimeZone(t *testing.T) {
	var b logBuilder
	b.usage("u1", "a", "image-tagging", 1000, "2026-10-31T16:30:00Z") // Nov 1 00:30 in Shanghai, Oct 31 in UTC
	_, evs, _ := replayLog(t, b.String(), until("2026-12-01T00:00:00Z"))
	if _, ok := bills(t, evs)["bill:a:2026-11"]; !ok {
		t.Fatalf("Asia/Shanghai: want a November bill, got %v", types(evs))
	}
	cfg := defaultConfig()
	cfg.Location = time.UTC
	_, evs, _ = replayLogWith(t, cfg, b.String(), until("2026-12-01T00:00:00Z"))
	if _, ok := bills(t, evs)["bill:a:2026-10"]; !ok {
		t.Fatalf("UTC: want an October bill, got %v", types(evs))
	}
}

func TestActivationGrantsFreePack(t *testing.T) {
	var b logBuilder
	b.usage("u1", "mid", "image-tagging", 20_000, "2026-10-02T00:00:00+08:00")
	b.activate("mid", "image-tagging", "2026-10-20T00:00:00+08:00") // mid-month: October gets the pack
	b.usage("u2", "late", "image-tagging", 20_000, "2026-10-02T00:00:00+08:00")
	b.activate("late", "image-tagging", "2026-11-02T00:00:00+08:00") // after October: none for October
	b.usage("u3", "late", "image-tagging", 20_000, "2026-11-03T00:00:00+08:00")
	_, evs, _ := replayLog(t, b.String(), until("2026-12-01T00:00:00+08:00"))
	bs := bills(t, evs)
	if l := lineOf(t, bs["bill:mid:2026-10"], "image-tagging"); !l.Activated || l.FreeCalls != 10_000 || l.Amount != "25.00" {
		t.Fatalf("mid-month activation: %+v", l)
	}
	if l := lineOf(t, bs["bill:late:2026-10"], "image-tagging"); l.Activated || l.FreeCalls != 0 || l.Amount != "50.00" {
		t.Fatalf("activation after the month: %+v", l)
	}
	if l := lineOf(t, bs["bill:late:2026-11"], "image-tagging"); !l.Activated || l.FreeCalls != 10_000 {
		t.Fatalf("month of activation: %+v", l)
	}
}

// Free pack first, then prepaid packs soonest-expiring first (a pack expiring mid-month leaves
// its rest frozen), then postpaid; the tier counts every call.
func TestPrepaidPacks(t *testing.T) {
	var b logBuilder
	b.activate("a", "image-tagging", "2026-09-01T00:00:00+08:00")
	b.pack("a", "image-tagging", "p-long", 100_000, "2026-10-01T00:00:00+08:00", "2026-12-01T00:00:00+08:00", "2026-09-30T00:00:00+08:00")
	b.pack("a", "image-tagging", "p-short", 50_000, "2026-10-01T00:00:00+08:00", "2026-10-16T00:00:00+08:00", "2026-09-30T00:00:00+08:00")
	b.pack("a", "image-tagging", "p-short", 50_000, "2026-10-01T00:00:00+08:00", "2026-10-16T00:00:00+08:00", "2026-09-30T00:00:00+08:00") // counts once
	b.usage("u1", "a", "image-tagging", 40_000, "2026-10-05T00:00:00+08:00")                                                               // 10,000 free + 30,000 from p-short
	b.usage("u2", "a", "image-tagging", 200_000, "2026-10-20T00:00:00+08:00")                                                              // p-short expired (20,000 frozen): 100,000 p-long + 100,000 postpaid
	b.usage("u3", "a", "image-tagging", 15_000, "2026-11-03T00:00:00+08:00")                                                               // p-long is empty: 10,000 free + 5,000 postpaid
	_, evs, _ := replayLog(t, b.String(), until("2026-12-01T00:00:00+08:00"))
	bs := bills(t, evs)
	oct := lineOf(t, bs["bill:a:2026-10"], "image-tagging")
	want := contract.BillLine{Service: "image-tagging", Activated: true, Calls: 240_000, FreeCalls: 10_000, PrepaidCalls: 130_000, BillableCalls: 100_000, Tier: 1, UnitPrice: "2.5", Amount: "250.00"}
	if oct != want {
		t.Fatalf("October line\n got %+v\nwant %+v", oct, want)
	}
	nov := lineOf(t, bs["bill:a:2026-11"], "image-tagging")
	if nov.PrepaidCalls != 0 || nov.BillableCalls != 5_000 || nov.Amount != "12.50" {
		t.Fatalf("November line %+v", nov)
	}
}

// A pack covers only calls in [valid_from, valid_until), and the free pack the first calls of
// the month even when a pack is valid then.
func TestPackValidityWindowAndFreeFirst(t *testing.T) {
	var b logBuilder
	b.pack("a", "vehicle-recognition", "p", 1_000, "2026-10-10T00:00:00+08:00", "2026-10-20T00:00:00+08:00", "2026-10-01T00:00:00+08:00")
	b.usage("u1", "a", "vehicle-recognition", 300, "2026-10-09T23:59:59+08:00") // before: postpaid
	b.usage("u2", "a", "vehicle-recognition", 400, "2026-10-10T00:00:00+08:00") // at valid_from: covered
	b.usage("u3", "a", "vehicle-recognition", 500, "2026-10-20T00:00:00+08:00") // at valid_until: not covered
	_, evs, _ := replayLog(t, b.String(), until("2026-11-01T00:00:00+08:00"))
	l := lineOf(t, bills(t, evs)["bill:a:2026-10"], "vehicle-recognition")
	if l.Activated || l.PrepaidCalls != 400 || l.BillableCalls != 800 || l.Amount != "2.40" {
		t.Fatalf("line %+v; want prepaid 400, billable 800, 2.40", l)
	}
}

func TestContractPriceOverride(t *testing.T) {
	var b logBuilder
	b.activate("a", "image-tagging", "2026-08-01T00:00:00+08:00")
	// Effective mid-October: applies from November (a month is priced whole).
	b.override("a", "image-tagging", "2026-10-15T00:00:00+08:00", "2026-09-01T00:00:00+08:00", 0, "1.0")
	// Two overrides with the same effective_from: the later in the log wins.
	b.override("a", "image-tagging", "2026-11-01T00:00:00+08:00", "2026-09-01T00:00:00+08:00", 0, "0.9")
	b.override("a", "image-tagging", "2026-11-01T00:00:00+08:00", "2026-09-02T00:00:00+08:00", 0, "0.8", 1_000_000, "0.5")
	b.usage("u1", "a", "image-tagging", 110_000, "2026-10-05T00:00:00+08:00")
	b.usage("u2", "a", "image-tagging", 110_000, "2026-11-05T00:00:00+08:00")
	_, evs, _ := replayLog(t, b.String(), until("2026-12-01T00:00:00+08:00"))
	bs := bills(t, evs)
	if l := lineOf(t, bs["bill:a:2026-10"], "image-tagging"); l.UnitPrice != "2.5" || l.Amount != "250.00" {
		t.Fatalf("October (override not yet effective at its first instant): %+v", l)
	}
	if l := lineOf(t, bs["bill:a:2026-11"], "image-tagging"); l.Tier != 1 || l.UnitPrice != "0.8" || l.Amount != "80.00" {
		t.Fatalf("November (latest override, later in log wins the tie): %+v", l)
	}
	// The hold after November is at list prices: 100,000 × 2.5 / 1000, not the contract's 80.00.
	for _, e := range evs {
		if e.ID == "tally.hold.requested.v1:hold:a:2026-12" {
			var h contract.HoldRequested
			_ = json.Unmarshal(e.Data, &h)
			if h.Amount != "250.00" || h.BasisPeriod != "2026-11" || h.ForPeriod != "2026-12" {
				t.Fatalf("hold %+v; want 250.00 for 2026-12 based on 2026-11", h)
			}
			return
		}
	}
	t.Fatalf("no hold for December in %v", types(evs))
}

func TestHoldRatioAndRounding(t *testing.T) {
	var b logBuilder
	// two lines at list price: 1,001 × 2.5 = 2.5025 → 2.50 and 1,003 × 3.0 = 3.009 → 3.01; sum 5.51
	b.usage("u1", "a", "image-tagging", 1_001, "2026-10-05T00:00:00+08:00")
	b.usage("u2", "a", "vehicle-recognition", 1_003, "2026-10-05T00:00:00+08:00")
	cfg := defaultConfig()
	cfg.HoldRatio = decimal.RequireFromString("0.5")
	_, evs, _ := replayLogWith(t, cfg, b.String(), until("2026-11-01T00:00:00+08:00"))
	bill := bills(t, evs)["bill:a:2026-10"]
	if bill.Total != "5.51" {
		t.Fatalf("total %s; want 5.51 (sum of rounded lines)", bill.Total)
	}
	var h contract.HoldRequested
	_ = json.Unmarshal(evs[len(evs)-1].Data, &h)
	if h.Amount != "2.76" { // 5.51 × 0.5 = 2.755 → 2.76
		t.Fatalf("hold %s; want 2.76", h.Amount)
	}
}

// The emitted stream for a month: per account in ascending id order, release → bill → request,
// with deterministic ids; lines by service id.
func TestSettlementOrderAndIDs(t *testing.T) {
	var b logBuilder
	b.usage("u1", "b-acct", "vehicle-recognition", 2_000, "2026-10-05T00:00:00+08:00")
	b.usage("u2", "a-acct", "vehicle-recognition", 2_000, "2026-10-05T00:00:00+08:00")
	b.usage("u3", "a-acct", "image-tagging", 2_000, "2026-10-05T00:00:00+08:00")
	b.usage("u4", "a-acct", "image-tagging", 4_000, "2026-11-05T00:00:00+08:00")
	_, evs, _ := replayLog(t, b.String(), until("2026-12-01T00:00:00+08:00"))
	want := []string{
		"tally.bill.issued.v1:bill:a-acct:2026-10",
		"tally.hold.requested.v1:hold:a-acct:2026-11",
		"tally.bill.issued.v1:bill:b-acct:2026-10",
		"tally.hold.requested.v1:hold:b-acct:2026-11",
		"tally.hold.released.v1:hold:a-acct:2026-11",
		"tally.bill.issued.v1:bill:a-acct:2026-11",
		"tally.hold.requested.v1:hold:a-acct:2026-12",
		"tally.hold.released.v1:hold:b-acct:2026-11", // b has no November usage: release only
	}
	if got := types(evs); !reflect.DeepEqual(got, want) {
		t.Fatalf("emitted\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	oct := bills(t, evs)["bill:a-acct:2026-10"]
	if oct.Lines[0].Service != "image-tagging" || oct.Lines[1].Service != "vehicle-recognition" {
		t.Fatalf("lines not in service order: %+v", oct.Lines)
	}
	if evs[0].Time != "2026-11-01T00:00:00+08:00" {
		t.Fatalf("settlement time %s", evs[0].Time)
	}
}

// A call recorded after its month was settled is billed at the next settlement as an adjustment;
// the month is re-priced whole, so crossing a tier can credit.
func TestLateEventCrossingATierIsAnAdjustment(t *testing.T) {
	var b logBuilder
	b.activate("a", "image-tagging", "2026-09-01T00:00:00+08:00")
	b.usage("u1", "a", "image-tagging", 999_000, "2026-10-05T00:00:00+08:00")
	b.lateUsage("u2", "a", "image-tagging", 1_000, "2026-10-31T23:59:00+08:00", "2026-11-01T00:00:00+08:00") // at the settlement instant: late
	b.lateUsage("u2", "a", "image-tagging", 1_000, "2026-10-31T23:59:00+08:00", "2026-11-02T00:00:00+08:00") // a retry: counted once
	_, evs, _ := replayLog(t, b.String(), until("2026-12-01T00:00:00+08:00"))
	bs := bills(t, evs)
	if l := lineOf(t, bs["bill:a:2026-10"], "image-tagging"); l.Calls != 999_000 || l.Amount != "2472.50" {
		t.Fatalf("October line %+v", l)
	}
	nov := bs["bill:a:2026-11"]
	want := []contract.Adjustment{{Period: "2026-10", Service: "image-tagging", CallsBefore: 999_000, CallsAfter: 1_000_000, Amount: "-294.50"}}
	if len(nov.Lines) != 0 || !reflect.DeepEqual(nov.Adjustments, want) || nov.Total != "-294.50" {
		t.Fatalf("November bill %+v; want only the adjustment %+v", nov, want)
	}
	// The hold for November was from October's usage as billed; no new hold (November has no usage).
	if got := types(evs); got[len(got)-1] != "tally.bill.issued.v1:bill:a:2026-11" {
		t.Fatalf("stream %v", got)
	}
}

// Re-pricing covers late activations (credit) and late packs too, and is idempotent: a month
// already adjusted is not adjusted again.
func TestRepriceWithLateActivationAndPack(t *testing.T) {
	var b logBuilder
	b.usage("u1", "a", "image-tagging", 30_000, "2026-10-05T00:00:00+08:00")
	b.usage("u2", "a", "image-tagging", 30_000, "2026-11-05T00:00:00+08:00")
	b.ev(contract.ActivatedType, "act", "2026-10-01T00:00:00+08:00", "2026-11-10T00:00:00+08:00",
		map[string]any{"account": "a", "service": "image-tagging"}) // recorded late: October gets its free pack
	b.ev(contract.PackPurchasedType, "pk", "2026-10-01T00:00:00+08:00", "2026-12-10T00:00:00+08:00",
		map[string]any{"account": "a", "service": "image-tagging", "pack_id": "p1", "calls": 5_000,
			"valid_from": "2026-10-01T00:00:00+08:00", "valid_until": "2027-01-01T00:00:00+08:00"})
	_, evs, _ := replayLog(t, b.String(), until("2027-01-01T00:00:00+08:00"))
	bs := bills(t, evs)
	// October billed 30,000 × 2.5 = 75.00; November billed 20,000 (activated) = 50.00 with a
	// -25.00 adjustment for October's free pack.
	nov := bs["bill:a:2026-11"]
	if lineOf(t, nov, "image-tagging").Amount != "50.00" || len(nov.Adjustments) != 1 || nov.Adjustments[0].Amount != "-25.00" || nov.Total != "25.00" {
		t.Fatalf("November bill %+v", nov)
	}
	// The pack (recorded in December) covers 5,000 of October's calls: -12.50 for October, and
	// November is unchanged because the pack is used up in October.
	dec := bs["bill:a:2026-12"]
	want := []contract.Adjustment{{Period: "2026-10", Service: "image-tagging", CallsBefore: 30_000, CallsAfter: 30_000, Amount: "-12.50"}}
	if !reflect.DeepEqual(dec.Adjustments, want) || len(dec.Lines) != 0 {
		t.Fatalf("December bill %+v; want %+v", dec, want)
	}
}

// The ledger round trip: a failed hold suspends, a recharge re-requests the same hold, a placed
// hold resumes; replies about other holds change nothing; with nothing left to hold, a
// suspended account is resumed at settlement.
func TestHoldFailureSuspensionAndResumption(t *testing.T) {
	var b logBuilder
	b.usage("u1", "a", "image-tagging", 2_000, "2026-10-05T00:00:00+08:00")
	b.holdReply(false, "a", "hold:a:2026-10", "2026-11-01T00:10:00+08:00") // not the current hold: nothing
	b.recharge("a", "100.00", "2026-11-01T00:20:00+08:00")                 // not suspended: nothing
	b.holdReply(false, "a", "hold:a:2026-11", "2026-11-01T01:00:00+08:00") // suspended
	b.holdReply(false, "a", "hold:a:2026-11", "2026-11-01T01:00:01+08:00") // duplicate reply: nothing
	b.recharge("a", "1.00", "2026-11-02T00:00:00+08:00")                   // retry 1
	b.holdReply(false, "a", "hold:a:2026-11", "2026-11-02T00:00:01+08:00") // fails again: still suspended
	b.recharge("a", "10.00", "2026-11-03T00:00:00+08:00")                  // retry 2
	b.holdReply(true, "a", "hold:a:2026-11", "2026-11-03T00:00:01+08:00")  // placed: resumed
	b.usage("u2", "a", "image-tagging", 2_000, "2026-11-05T00:00:00+08:00")
	b.holdReply(false, "a", "hold:a:2026-12", "2026-12-01T01:00:00+08:00") // December's hold fails
	// December has no usage: at its settlement nothing is held, so the account resumes.
	_, evs, _ := replayLog(t, b.String(), until("2027-01-01T00:00:00+08:00"))
	want := []string{
		"tally.bill.issued.v1:bill:a:2026-10",
		"tally.hold.requested.v1:hold:a:2026-11",
		"tally.account.suspended.v1:hold:a:2026-11",
		"tally.hold.requested.v1:hold:a:2026-11:1",
		"tally.hold.requested.v1:hold:a:2026-11:2",
		"tally.account.resumed.v1:hold:a:2026-11:2",
		"tally.hold.released.v1:hold:a:2026-11",
		"tally.bill.issued.v1:bill:a:2026-11",
		"tally.hold.requested.v1:hold:a:2026-12",
		"tally.account.suspended.v1:hold:a:2026-12",
		// December settlement: the failed hold is not released; no bill; nothing to hold.
		"tally.account.resumed.v1:hold:a:2026-12",
	}
	if got := types(evs); !reflect.DeepEqual(got, want) {
		t.Fatalf("emitted\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var retry contract.HoldRequested
	_ = json.Unmarshal(evs[3].Data, &retry)
	if retry.HoldID != "hold:a:2026-11" || retry.Amount != "5.00" {
		t.Fatalf("retry %+v; want the same hold and amount", retry)
	}
	reasons := map[string]string{}
	for _, e := range evs {
		var s contract.AccountStatus
		if strings.Contains(e.Type, "account") {
			_ = json.Unmarshal(e.Data, &s)
			reasons[e.ID] = s.Reason
		}
	}
	if reasons["tally.account.suspended.v1:hold:a:2026-11"] != contract.ReasonHoldFailed ||
		reasons["tally.account.resumed.v1:hold:a:2026-11:2"] != contract.ReasonHoldPlaced ||
		reasons["tally.account.resumed.v1:hold:a:2026-12"] != contract.ReasonNothingToHold {
		t.Fatalf("reasons %v", reasons)
	}
}

func TestDuplicatesCountOnce(t *testing.T) {
	var b logBuilder
	b.usage("sep", "a", "image-tagging", 1_000, "2026-09-05T00:00:00+08:00")
	b.ev(contract.ActivatedType, "", "2026-10-20T00:00:00+08:00", "2026-09-06T00:00:00+08:00", map[string]any{"account": "a", "service": "image-tagging"})
	b.ev(contract.ActivatedType, "", "2026-09-01T00:00:00+08:00", "2026-09-07T00:00:00+08:00", map[string]any{"account": "a", "service": "image-tagging"}) // a later activation changes nothing
	b.usage("same", "a", "image-tagging", 20_000, "2026-10-05T00:00:00+08:00")
	b.usage("same", "a", "image-tagging", 20_000, "2026-10-06T00:00:00+08:00")      // same identity: ignored
	b.usage("same", "a", "vehicle-recognition", 1_000, "2026-10-05T00:00:00+08:00") // other service: counts
	b.usage("same", "b", "image-tagging", 1_000, "2026-10-05T00:00:00+08:00")       // other account: counts
	b.usage("same", "a", "image-tagging", 1_000, "2026-11-05T00:00:00+08:00")       // other month: counts
	_, evs, _ := replayLog(t, b.String(), until("2026-12-01T00:00:00+08:00"))
	bs := bills(t, evs)
	if l := lineOf(t, bs["bill:a:2026-10"], "image-tagging"); l.Calls != 20_000 {
		t.Fatalf("duplicate counted: %+v", l)
	}
	if lineOf(t, bs["bill:a:2026-10"], "vehicle-recognition").Calls != 1_000 || lineOf(t, bs["bill:b:2026-10"], "image-tagging").Calls != 1_000 ||
		lineOf(t, bs["bill:a:2026-11"], "image-tagging").Calls != 1_000 {
		t.Fatal("an event with a different identity was dropped")
	}
	// The first activation (Oct 20) counts, so September has no free pack.
	if l := lineOf(t, bs["bill:a:2026-09"], "image-tagging"); l.Activated || l.FreeCalls != 0 {
		t.Fatalf("the second activation counted: %+v", l)
	}
	if !lineOf(t, bs["bill:a:2026-10"], "image-tagging").Activated {
		t.Fatal("activation lost")
	}
}

func TestSettlingTwiceEmitsNothing(t *testing.T) {
	var emitted int
	eng, err := New(defaultConfig(), func(o CloudOut) error { emitted++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	at := mustTime("2026-10-05T00:00:00+08:00")
	if err := eng.Apply(Usage{usageOf("u1", "a", "image-tagging", 5_000, at)}, at); err != nil {
		t.Fatal(err)
	}
	oct := contract.PeriodOf(at, defaultConfig().Location)
	if err := eng.Settle(oct, mustTime("2026-11-01T00:00:00+08:00")); err != nil {
		t.Fatal(err)
	}
	first := emitted
	if err := eng.Settle(oct, mustTime("2026-11-02T00:00:00+08:00")); err != nil {
		t.Fatal(err)
	}
	if first != 2 || emitted != first {
		t.Fatalf("emitted %d then %d; want 2 then nothing more", first, emitted)
	}
	if err := eng.Settle(oct.Next().Next(), mustTime("2027-01-01T00:00:00+08:00")); err == nil {
		t.Fatal("settling with a gap was accepted")
	}
}
