package billsink

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func bill(total, unitPrice, amount, adjustment string) string {
	return `{"specversion":"1.0","id":"tally.bill.issued.v1:bill:acme:2026-10","source":"tally","type":"tally.bill.issued.v1","time":"2026-11-01T01:00:00+08:00",` +
		`"data":{"bill_id":"bill:acme:2026-10","account":"acme","period":"2026-10","currency":"CNY","lines":[{"service":"image-tagging","activated":true,"calls":20000,` +
		`"free_calls":10000,"prepaid_calls":0,"billable_calls":10000,"tier":1,"unit_price":"` + unitPrice + `","amount":"` + amount + `"}],` +
		`"adjustments":[{"period":"2026-09","service":"image-tagging","calls_before":100,"calls_after":200,"amount":"` + adjustment + `"}],"total":"` + total + `"}}`
}

// A record the tables cannot hold exactly is skipped with a reason, and adds no row at all:
// a bill whose adjustment does not fit must not leave its lines behind.
func TestRowsTakeOnlyWhatFitsExactly(t *testing.T) {
	for _, c := range []struct {
		name, value, reason string
	}{
		{"a bill", bill("12.30", "0.0012345678", "12.00", "0.30"), ""},
		{"a credit", bill("-1.50", "0.0010", "0.00", "-1.50"), ""},
		{"cents past the second place", bill("12.305", "0.0012", "12.00", "0.30"), SkipBadData},
		{"a unit price past the tenth place", bill("12.30", "0.00123456789", "12.00", "0.30"), SkipBadData},
		{"an adjustment that is no number", bill("12.30", "0.0012", "12.00", "0.3O"), SkipBadData},
		{"a total too large for the column", bill("1"+strings.Repeat("0", 36)+".00", "0.0012", "12.00", "0.30"), SkipBadData},
		{"not JSON", "bill", SkipNotCloudEvent},
		{"another type", `{"specversion":"1.0","id":"x","source":"s","type":"com.example.v1","time":"2026-11-01T00:00:00Z","data":{}}`, SkipUnknownType},
		{"a hold with no period", `{"specversion":"1.0","id":"h","source":"tally","type":"tally.hold.requested.v1","time":"2026-11-01T00:00:00Z",` +
			`"data":{"hold_id":"hold:acme:2026-11","account":"acme","amount":"1.00","for_period":"","basis_period":"2026-10"}}`, SkipBadData},
	} {
		var r rows
		err := r.add([]byte(c.value), 0, 7)
		var skip *skipped
		switch {
		case c.reason == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.reason == "" && (len(r.bills) != 1 || len(r.lines) != 1 || len(r.adjustments) != 1):
			t.Errorf("%s: %d bills, %d lines, %d adjustments, want one of each", c.name, len(r.bills), len(r.lines), len(r.adjustments))
		case c.reason != "" && (!errors.As(err, &skip) || skip.reason != c.reason):
			t.Errorf("%s: %v, want skipped as %s", c.name, err, c.reason)
		case c.reason != "" && r.len() != 0:
			t.Errorf("%s: skipped, yet %d rows added", c.name, r.len())
		}
	}
}

// Whatever the billing topic holds, reading it never panics, and a record is either rows or a
// skip with a reason.
func FuzzRowsAdd(f *testing.F) {
	f.Add([]byte(bill("12.30", "0.0012", "12.00", "0.30")))
	if raw, err := os.ReadFile("../testdata/scenarios/quarter.golden.jsonl"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			f.Add([]byte(line))
		}
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		var r rows
		err := r.add(value, 0, 0)
		var skip *skipped
		if err != nil && (!errors.As(err, &skip) || skip.reason == "" || r.len() != 0) {
			t.Fatalf("%q: %v with %d rows", value, err, r.len())
		}
	})
}
