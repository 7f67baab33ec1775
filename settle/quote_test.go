package settle

import (
	"testing"

	"github.com/tally-billing/tally/contract"
)

func TestQuoteMonth(t *testing.T) {
	cfg := defaultConfig()
	oct := contract.Period{Year: 2026, Month: 10}
	cases := []struct {
		name string
		q    QuoteRequest
		want contract.BillLine
		list string
	}{
		{"activated, tier 2", QuoteRequest{Service: "image-tagging", Period: oct, Calls: 1_000_000, Activated: true},
			contract.BillLine{Service: "image-tagging", Activated: true, Calls: 1_000_000, FreeCalls: 10_000, BillableCalls: 990_000, Tier: 2, UnitPrice: "2.2", Amount: "2178.00"}, "2178.00"},
		{"prepaid after free", QuoteRequest{Service: "vehicle-recognition", Period: oct, Calls: 50_000, PrepaidCalls: 30_000, Activated: true},
			contract.BillLine{Service: "vehicle-recognition", Activated: true, Calls: 50_000, FreeCalls: 10_000, PrepaidCalls: 30_000, BillableCalls: 10_000, Tier: 1, UnitPrice: "3", Amount: "30.00"}, "30.00"},
		{"contract price", QuoteRequest{Service: "image-tagging", Period: oct, Calls: 20_000, Contract: []Tier{NewTier(0, mustDecimal("1.1"))}},
			contract.BillLine{Service: "image-tagging", Calls: 20_000, BillableCalls: 20_000, Tier: 1, UnitPrice: "1.1", Amount: "22.00"}, "50.00"},
		{"beta", QuoteRequest{Service: "image-enhancement", Period: oct, Calls: 20_000},
			contract.BillLine{Service: "image-enhancement", Calls: 20_000, BillableCalls: 20_000, Tier: 0, UnitPrice: "0", Amount: "0.00"}, "0.00"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := QuoteMonth(cfg, c.q)
			if err != nil {
				t.Fatal(err)
			}
			if got.Line != c.want || got.ListAmount != c.list {
				t.Fatalf("got %+v list %s\nwant %+v list %s", got.Line, got.ListAmount, c.want, c.list)
			}
		})
	}
	if _, err := QuoteMonth(cfg, QuoteRequest{Service: "nope", Period: oct}); err == nil {
		t.Fatal("unknown service quoted")
	}
}
