package contract

import (
	"fmt"
	"time"
)

// Period is a calendar month in the billing time zone. The zero Period is no month.
type Period struct {
	Year  int
	Month time.Month
}

// PeriodOf is the billing month of instant t in loc.
func PeriodOf(t time.Time, loc *time.Location) Period {
	lt := t.In(loc)
	return Period{Year: lt.Year(), Month: lt.Month()}
}

// ParsePeriod parses "YYYY-MM".
func ParsePeriod(s string) (Period, error) {
	t, err := time.Parse("2006-01", s)
	if err != nil {
		return Period{}, fmt.Errorf("period %q is not YYYY-MM", s)
	}
	return Period{Year: t.Year(), Month: t.Month()}, nil
}

// Start is the period's first instant in loc.
func (p Period) Start(loc *time.Location) time.Time {
	return time.Date(p.Year, p.Month, 1, 0, 0, 0, 0, loc)
}

// End is the first instant after the period (the next period's start).
func (p Period) End(loc *time.Location) time.Time { return p.Next().Start(loc) }

// Next is the following month; Prev the preceding one.
func (p Period) Next() Period {
	if p.Month == time.December {
		return Period{Year: p.Year + 1, Month: time.January}
	}
	return Period{Year: p.Year, Month: p.Month + 1}
}

func (p Period) Prev() Period {
	if p.Month == time.January {
		return Period{Year: p.Year - 1, Month: time.December}
	}
	return Period{Year: p.Year, Month: p.Month - 1}
}

// Before reports whether p is an earlier month than q.
func (p Period) Before(q Period) bool {
	return p.Year < q.Year || p.Year == q.Year && p.Month < q.Month
}

// YYYYMM is the period as a number (202610), the form ClickHouse tables partition by.
func (p Period) YYYYMM() uint32 { return uint32(p.Year*100 + int(p.Month)) }

// PeriodOfYYYYMM is the inverse of YYYYMM.
func PeriodOfYYYYMM(n uint32) Period { return Period{Year: int(n / 100), Month: time.Month(n % 100)} }

// IsZero reports whether p is the zero Period.
func (p Period) IsZero() bool { return p.Year == 0 && p.Month == 0 }

// String is "YYYY-MM", the wire form.
func (p Period) String() string {
	if p.Year < 0 || p.Year > 9999 {
		return fmt.Sprintf("%04d-%02d", p.Year, int(p.Month))
	}
	y, m := p.Year, int(p.Month)
	b := [7]byte{byte('0' + y/1000), byte('0' + y/100%10), byte('0' + y/10%10), byte('0' + y%10), '-', byte('0' + m/10), byte('0' + m%10)}
	return string(b[:])
}
