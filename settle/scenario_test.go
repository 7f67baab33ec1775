package settle

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
)

// The scenarios under testdata/scenarios, with the figures worked out by hand from the price
// guide (the golden files pin the bytes; this pins the money).
func TestScenarioQuarterByHand(t *testing.T) {
	log, err := os.ReadFile("testdata/scenarios/quarter.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	_, evs, rej := replayLog(t, string(log), until("2026-11-01T00:00:00+08:00"))
	if rej == "" {
		t.Fatal("the unknown-service line was not rejected")
	}
	bs := bills(t, evs)
	totals := map[string]string{
		// 999,001 calls (a retry dropped; a call at 23:00 on Aug 31 in time): 989,001 × 2.5
		"bill:acme:2026-08": "2472.50",
		// 60,000 calls all from the pack valid Aug 15 – Sep 15
		"bill:globex:2026-08": "0.00",
		// 110,000 − 10,000 free, × 3.0
		"bill:initech:2026-08": "300.00",
		// 10,000 × 2.5 + (50,000 − 10,000: activated mid-month) × 3.0, and the late 2,000 calls of
		// August cross 1,000,000: 991,001 × 2.2 = 2180.20 replaces 2472.50 → −292.30
		"bill:acme:2026-09": "-147.30",
		// the pack covers 40,000 of the first 70,000 and expires; 60,000 × 1.8 contract price
		"bill:globex:2026-09": "108.00",
		// free pack and free beta
		"bill:initech:2026-09": "0.00",
		"bill:acme:2026-10":    "0.00",
		// a late 1,000 calls of September at the contract price: 61,000 × 1.8 − 108.00
		"bill:globex:2026-10": "1.80",
	}
	got := map[string]string{}
	for id, b := range bs {
		got[id] = b.Total
	}
	if !reflect.DeepEqual(got, totals) {
		t.Fatalf("bill totals\n got %v\nwant %v", got, totals)
	}
	holds := map[string]string{}
	for _, e := range evs {
		if e.Type == contract.HoldRequestedType {
			var h contract.HoldRequested
			_ = json.Unmarshal(e.Data, &h)
			holds[e.ID] = h.Amount
		}
	}
	wantHolds := map[string]string{
		"tally.hold.requested.v1:hold:acme:2026-09":      "2472.50",
		"tally.hold.requested.v1:hold:initech:2026-09":   "300.00",
		"tally.hold.requested.v1:hold:initech:2026-09:1": "300.00", // after the recharge
		"tally.hold.requested.v1:hold:acme:2026-10":      "145.00",
		"tally.hold.requested.v1:hold:globex:2026-10":    "150.00", // 60,000 at the list price 2.5
	}
	if !reflect.DeepEqual(holds, wantHolds) {
		t.Fatalf("holds\n got %v\nwant %v", holds, wantHolds)
	}
}

func TestScenarioPacksAcrossMonthsByHand(t *testing.T) {
	log, err := os.ReadFile("testdata/scenarios/packs-across-months.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	_, evs, _ := replayLog(t, string(log), ReplayOptions{Grace: 6 * time.Hour, Until: mustTime("2026-04-01T06:00:00+08:00")})
	bs := bills(t, evs)
	jan := bs["bill:umbrella:2026-01"].Lines[0]
	// 400,000 before the packs (10,000 free); 1,000,000 on Jan 25: 500,000 from the promo pack
	// (expires first) + 500,000 from the year pack; 1,000,000 recorded within the grace period:
	// year pack. Tier 2 (2.4M calls): 390,000 × 1.5.
	if jan.Calls != 2_400_000 || jan.PrepaidCalls != 2_000_000 || jan.BillableCalls != 390_000 || jan.Amount != "585.00" {
		t.Fatalf("January %+v", jan)
	}
	feb := bs["bill:umbrella:2026-02"]
	// A late 1,000,000 for January takes the year pack down to 500,000 and lifts January to
	// tier 3: 390,000 × 1.2 = 468.00, so −117.00. February: 500,000 left in the pack.
	want := []contract.Adjustment{{Period: "2026-01", Service: "celebrity-recognition", CallsBefore: 2_400_000, CallsAfter: 3_400_000, Amount: "-117.00"}}
	if !reflect.DeepEqual(feb.Adjustments, want) || feb.Lines[0].PrepaidCalls != 500_000 || feb.Lines[0].Amount != "2235.00" || feb.Total != "2118.00" {
		t.Fatalf("February %+v", feb)
	}
	if mar := bs["bill:umbrella:2026-03"].Lines[0]; mar.PrepaidCalls != 0 || mar.Amount != "1485.00" {
		t.Fatalf("March %+v", mar)
	}
}
