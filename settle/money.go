package settle

import (
	"errors"
	"math/bits"
	"strconv"

	"github.com/shopspring/decimal"
)

// cents is an exact amount of money in hundredths of the currency unit. Every amount the engine
// keeps is rounded to 0.01 (SPEC §2), so integer cents are exact; they are what makes settling a
// million accounts cheap. Prices stay decimal.Decimal, and every operation is overflow-checked:
// past ±92 quadrillion the engine fails loudly instead of being wrong.
type cents int64

var errOverflow = errors.New("settle: amount overflows int64 cents")

func (c cents) add(d cents) (cents, error) {
	s := c + d
	if (d > 0 && s < c) || (d < 0 && s > c) {
		return 0, errOverflow
	}
	return s, nil
}

// String formats the amount the wire way: a decimal string with two places ("-12.05").
func (c cents) String() string {
	u := uint64(c)
	if c < 0 {
		u = -u
	}
	var buf [24]byte
	b := strconv.AppendUint(buf[:1], u, 10)[1:] // buf[0] is kept free for a sign
	for len(b) < 3 {
		b = append([]byte{'0'}, b...)
	}
	n := len(b)
	b = append(b, 0)
	copy(b[n-1:], b[n-2:n])
	b[n-2] = '.'
	if c < 0 {
		return "-" + string(b)
	}
	return string(b)
}

// Decimal is the amount as a decimal.Decimal.
func (c cents) Decimal() decimal.Decimal { return decimal.New(int64(c), -2) }

// centsOf converts an amount already rounded to 0.01.
func centsOf(d decimal.Decimal) (cents, error) {
	v := d.Shift(2)
	if !v.IsInteger() {
		return 0, errors.New("settle: amount has more than two decimal places")
	}
	if v.BigInt().IsInt64() {
		return cents(v.IntPart()), nil
	}
	return 0, errOverflow
}

// Amount is what billable calls cost at a unit price per 1,000 calls, rounded half-up to 0.01.
func Amount(billable int64, unitPrice decimal.Decimal) decimal.Decimal {
	return decimal.NewFromInt(billable).Mul(unitPrice).Shift(-3).Round(2)
}

// priceMicros is a unit price in millionths, when it is exact at that scale and fits.
func priceMicros(p decimal.Decimal) (int64, bool) {
	m := p.Shift(6)
	if !m.IsInteger() || m.IsNegative() || !m.BigInt().IsInt64() {
		return 0, false
	}
	return m.IntPart(), true
}

// amountCents is Amount in cents: with 128-bit integer arithmetic for prices of up to six
// decimals (all real ones), else through decimal.
func amountCents(billable int64, t *Tier) (cents, error) {
	if t.micros >= 0 && billable >= 0 {
		// cents = billable × price/1000 × 100 = billable × micros / 10^7, rounded half-up.
		const div = 10_000_000
		hi, lo := bits.Mul64(uint64(billable), uint64(t.micros))
		if hi < div {
			q, r := bits.Div64(hi, lo, div)
			if r >= div/2 {
				q++
			}
			if q <= 1<<63-1 {
				return cents(q), nil
			}
		}
	}
	return centsOf(Amount(billable, t.UnitPrice))
}
