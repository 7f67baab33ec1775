package settle

import (
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
)

func TestTermsCountByTheSettlementRules(t *testing.T) {
	at := mustTime("2026-10-01T00:00:00+08:00")
	later := at.Add(time.Hour)
	pack := func(account, id string) PackPurchase {
		return PackPurchase{Account: account, Service: "image-tagging", PackID: id, Calls: 5, ValidFrom: at, ValidUntil: later}
	}
	override := PriceOverride{Account: "a", Service: "image-tagging", EffectiveFrom: at, Tiers: []Tier{NewTier(0, mustDecimal("1"))}}
	steps := []struct {
		in     Input
		counts bool
	}{
		{Activation{Account: "a", Service: "image-tagging", At: at}, true},
		{Activation{Account: "a", Service: "image-tagging", At: later}, false}, // the first activation counts
		{Activation{Account: "b", Service: "image-tagging", At: later}, true},  // per account
		{Activation{Account: "a", Service: "face-detection", At: later}, true}, // and per service
		{pack("a", "p1"), true},
		{pack("b", "p1"), false}, // a pack_id counts once, whichever account names it
		{pack("a", "p1"), false},
		{pack("a", "p2"), true},
		{override, true},
		{override, true}, // every contract price counts: the latest effective one applies
		{Usage{contract.Usage{ID: "u", Account: "a", Service: "image-tagging", Calls: 1, Time: at}}, false},
		{HoldReply{Account: "a", HoldID: "h"}, false},
		{Tick{}, false},
	}
	terms := NewTerms()
	for i, s := range steps {
		if got := terms.Add(s.in); got != s.counts {
			t.Errorf("step %d (%T %+v): Add = %v; want %v", i, s.in, s.in, got, s.counts)
		}
	}
	if got := terms.Of("a", "image-tagging"); len(got) != 5 || got[0] != steps[0].in || got[1] != Input(pack("a", "p1")) {
		t.Errorf("terms of a/image-tagging = %+v", got)
	}
	if got := terms.Services("a"); len(got) != 2 || got[0] != "face-detection" || got[1] != "image-tagging" {
		t.Errorf("services of a = %v", got)
	}
	if got := terms.Of("b", "image-tagging"); len(got) != 1 {
		t.Errorf("terms of b = %+v; want its activation only (its pack p1 was a's)", got)
	}
}
