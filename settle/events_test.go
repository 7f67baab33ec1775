package settle

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// What contract.Encode writes, DecodeInput reads back as the input it describes: the encoder the
// demo, the load generator, the journal and the tests use speaks the decoder's language.
func TestEncodedInputsDecode(t *testing.T) {
	cat := DefaultCatalogue()
	at := mustTime("2026-10-05T12:00:00+08:00")
	from, until := mustTime("2026-10-01T00:00:00+08:00"), mustTime("2026-11-01T00:00:00+08:00")
	cases := []struct {
		typ  string
		data any
		want Input
	}{
		{contract.UsageType, contract.UsageData{Account: "a.b_c-1", Service: "image-tagging", Calls: 7},
			Usage{contract.Usage{ID: `id "quoted" \ ü`, Account: "a.b_c-1", Service: "image-tagging", Calls: 7, Time: at}}},
		{contract.ActivatedType, contract.ActivationData{Account: "a", Service: "vehicle-recognition"},
			Activation{Account: "a", Service: "vehicle-recognition", At: at}},
		{contract.PackPurchasedType, contract.PackPurchaseData{Account: "a", Service: "image-tagging", PackID: "p<1>&", Calls: 5,
			ValidFrom: cloudevent.FormatTime(from), ValidUntil: cloudevent.FormatTime(until)},
			PackPurchase{Account: "a", Service: "image-tagging", PackID: "p<1>&", Calls: 5, ValidFrom: from, ValidUntil: until}},
		{contract.PriceOverrideType, contract.PriceOverrideData{Account: "a", Service: "image-tagging", EffectiveFrom: cloudevent.FormatTime(from),
			Tiers: []contract.TierData{{FromCalls: 0, UnitPrice: "1.10"}, {FromCalls: 1_000_000, UnitPrice: "0.9"}}},
			PriceOverride{Account: "a", Service: "image-tagging", EffectiveFrom: from, Tiers: []Tier{NewTier(0, mustDecimal("1.10")), NewTier(1_000_000, mustDecimal("0.9"))}}},
		{contract.HoldPlacedType, contract.HoldReplyData{Account: "a", HoldID: "hold:a:2026-11"},
			HoldReply{Account: "a", HoldID: "hold:a:2026-11", Placed: true}},
		{contract.HoldFailedType, contract.HoldReplyData{Account: "a", HoldID: "hold:a:2026-11", Reason: "insufficient_balance"},
			HoldReply{Account: "a", HoldID: "hold:a:2026-11", Reason: "insufficient_balance"}},
		{contract.RechargedType, contract.RechargeData{Account: "a", Amount: "10000.00"},
			Recharge{Account: "a", Amount: decimal.RequireFromString("10000.00")}},
		{contract.ClockTickType, contract.ClockTickData{Offsets: map[string]int64{"0": 12}}, Tick{}},
	}
	for _, c := range cases {
		id := "ev-1"
		if u, ok := c.want.(Usage); ok {
			id = u.ID
		}
		raw := contract.MustEncode(contract.Event{ID: id, Source: "test", Type: c.typ, Time: at, Data: c.data})
		ev, err := cloudevent.Decode(raw)
		if err != nil {
			t.Fatalf("%s: %s does not decode: %v", c.typ, raw, err)
		}
		got, err := DecodeInput(ev, at, cat)
		if err != nil {
			t.Fatalf("%s: %s rejected: %v", c.typ, raw, err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(c.want)) {
			t.Errorf("%s: decoded %+v; want %+v", c.typ, got, c.want)
		}
	}
}

// normalize makes decoded times and decimals comparable with DeepEqual.
func normalize(in Input) any {
	switch v := in.(type) {
	case Usage:
		v.Time = v.Time.UTC()
		return v
	case Activation:
		v.At = v.At.UTC()
		return v
	case PackPurchase:
		v.ValidFrom, v.ValidUntil = v.ValidFrom.UTC(), v.ValidUntil.UTC()
		return v
	case PriceOverride:
		v.EffectiveFrom = v.EffectiveFrom.UTC()
		tiers := make([]string, len(v.Tiers))
		for i, t := range v.Tiers {
			tiers[i] = fmt.Sprintf("%d@%s", t.FromCalls, t.UnitPrice)
		}
		return struct {
			PriceOverride
			tiers []string
		}{PriceOverride{Account: v.Account, Service: v.Service, EffectiveFrom: v.EffectiveFrom}, tiers}
	case Recharge:
		return v.Amount.String() + " " + v.Account
	}
	return in
}
