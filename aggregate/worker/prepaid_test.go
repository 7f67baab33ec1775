package worker

import (
	"fmt"
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
