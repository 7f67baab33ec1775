package settle

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/shopspring/decimal"
)

func TestCentsString(t *testing.T) {
	for c, want := range map[cents]string{0: "0.00", 5: "0.05", -5: "-0.05", 100: "1.00", -29230: "-292.30", 269405: "2694.05",
		math.MaxInt64: "92233720368547758.07", math.MinInt64 + 1: "-92233720368547758.07"} {
		if got := c.String(); got != want {
			t.Errorf("cents(%d) = %s; want %s", int64(c), got, want)
		}
	}
}

// The integer fast path agrees with exact decimal arithmetic for every price and call count.
func TestAmountCentsMatchesDecimal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	prices := []string{"0", "2.5", "2.2", "3.5", "1", "0.0001", "0.123456", "0.1234567", "1234.5", "99999999"}
	for range 20_000 {
		price := decimal.RequireFromString(prices[r.IntN(len(prices))])
		tier := NewTier(0, price)
		billable := r.Int64N(1 << uint(r.IntN(62)))
		got, err := amountCents(billable, &tier)
		want := Amount(billable, price)
		if err != nil {
			if want.Shift(2).BigInt().IsInt64() {
				t.Fatalf("%d × %s: %v, but %s fits", billable, price, err, want)
			}
			continue
		}
		if !got.Decimal().Equal(want) {
			t.Fatalf("%d × %s = %s; decimal says %s", billable, price, got, want)
		}
	}
}

func TestCentsOverflowIsAnError(t *testing.T) {
	if _, err := cents(math.MaxInt64).add(1); err == nil {
		t.Fatal("overflow not detected")
	}
	if _, err := cents(math.MinInt64).add(-1); err == nil {
		t.Fatal("underflow not detected")
	}
	tier := NewTier(0, decimal.RequireFromString("99999999"))
	if _, err := amountCents(math.MaxInt64, &tier); err == nil {
		t.Fatal("an amount beyond int64 cents was accepted")
	}
}
