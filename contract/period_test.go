package contract

import "testing"

func TestPeriodString(t *testing.T) {
	for p, want := range map[Period]string{{2026, 10}: "2026-10", {2020, 1}: "2020-01", {1, 12}: "0001-12", {12026, 1}: "12026-01"} {
		if got := p.String(); got != want {
			t.Errorf("%v.String() = %s; want %s", p, got, want)
		}
	}
}

func TestPeriodYYYYMM(t *testing.T) {
	p := Period{Year: 2026, Month: 10}
	if p.YYYYMM() != 202610 || PeriodOfYYYYMM(202610) != p || PeriodOfYYYYMM(202001) != (Period{Year: 2020, Month: 1}) {
		t.Fatalf("%d %v", p.YYYYMM(), PeriodOfYYYYMM(202610))
	}
}
