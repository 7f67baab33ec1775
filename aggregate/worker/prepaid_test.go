package worker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/settle"
)

func TestFitToRunning(t *testing.T) {
	loc, _ := time.LoadLocation("Asia/Shanghai")
	day := func(m, d int) time.Time { return time.Date(2026, time.Month(m), d, 0, 0, 0, 0, loc) }
	oct := contract.Period{Year: 2026, Month: 10}
	stored := func() []settle.CallsAt {
		return []settle.CallsAt{{At: day(10, 20), Calls: 5}, {At: day(9, 25), Calls: 7}, {At: day(10, 2), Calls: 3}}
	}
	cases := []struct {
		name    string
		running int64
		want    string
	}{
		// The sink is behind: the 4 calls it has not written are the latest, counted at "fresh".
		{"sink behind", 12, fmt.Sprint([]settle.CallsAt{{At: day(9, 25), Calls: 7}, {At: day(10, 2), Calls: 3}, {At: day(10, 20), Calls: 5}, {At: day(10, 26), Calls: 4}})},
		{"caught up", 8, fmt.Sprint([]settle.CallsAt{{At: day(9, 25), Calls: 7}, {At: day(10, 2), Calls: 3}, {At: day(10, 20), Calls: 5}})},
		// The aggregator is behind: the latest October calls go first; September is not touched.
		{"aggregator behind", 2, fmt.Sprint([]settle.CallsAt{{At: day(9, 25), Calls: 7}, {At: day(10, 2), Calls: 2}, {At: day(10, 20), Calls: 0}})},
	}
	for _, c := range cases {
		if got := fmt.Sprint(fitToRunning(stored(), oct, loc, c.running, day(10, 26))); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}

func TestWindowedCallsQuery(t *testing.T) {
	oct, nov := contract.Period{Year: 2026, Month: 10}, contract.Period{Year: 2026, Month: 11}
	b1 := time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name   string
		bounds []time.Time
		nanos  []int64
	}{
		{"no packs", nil, []int64{}},
		{"two bounds", []time.Time{b1, b1.Add(time.Nanosecond)}, []int64{b1.UnixNano(), b1.UnixNano() + 1}},
	} {
		q, args := windowedCallsQuery("acme", "image-tagging", oct, nov, c.bounds)
		if n := strings.Count(q, "?"); n != len(args) {
			t.Fatalf("%s: %d placeholders, %d args", c.name, n, len(args))
		}
		want := []any{c.nanos, "acme", "image-tagging", uint32(202610), uint32(202611)}
		if fmt.Sprintf("%#v", args) != fmt.Sprintf("%#v", want) {
			t.Errorf("%s: args %#v; want %#v", c.name, args, want)
		}
		// Each identity once: the calls of duplicates must not be summed.
		if !strings.Contains(q, "FROM usage_events FINAL") {
			t.Errorf("%s: query reads usage_events without FINAL:\n%s", c.name, q)
		}
	}
}
