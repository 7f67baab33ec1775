package contract

import "testing"

// The ids are SPEC §4's: a ledger deduplicates by them, so their form must never drift.
func TestIDsHaveTheSpecForm(t *testing.T) {
	oct := Period{Year: 2026, Month: 10}
	if got := BillID("a", oct.String()); got != "bill:a:2026-10" {
		t.Errorf("BillID = %s", got)
	}
	if got := HoldID("a", oct.Next().String()); got != "hold:a:2026-11" {
		t.Errorf("HoldID = %s", got)
	}
}
