package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
)

// A closed month is recounted once per closedMonthTTL per account; an error is not kept; what a
// caller does to its answer does not reach the cache; the cache never holds more than
// closedMonthEntries.
func TestClosedMonthRecountsAreCached(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	c := &closedMonths{now: func() time.Time { return now }}
	aug := contract.Period{Year: 2026, Month: time.August}
	counts := 0
	count := func() (map[string]int64, error) {
		counts++
		return map[string]int64{"image-tagging": 42}, nil
	}
	first, _ := c.get("acme", aug, count)
	first["image-tagging"] = 0 // the API adds services to its answer
	again, _ := c.get("acme", aug, count)
	if counts != 1 || again["image-tagging"] != 42 {
		t.Fatalf("asked again within the TTL: %d recounts, answer %v", counts, again)
	}
	if _, _ = c.get("globex", aug, count); counts != 2 {
		t.Fatalf("another account shared acme's entry: %d recounts", counts)
	}
	now = now.Add(closedMonthTTL)
	if _, _ = c.get("acme", aug, count); counts != 3 {
		t.Fatalf("after the TTL: %d recounts", counts)
	}
	if _, err := c.get("initech", aug, func() (map[string]int64, error) { return nil, errors.New("clickhouse down") }); err == nil {
		t.Fatal("the error was lost")
	}
	if _, _ = c.get("initech", aug, count); counts != 4 {
		t.Fatal("a failed recount was cached")
	}
	for i := range closedMonthEntries + 10 {
		_, _ = c.get(string(rune('a'+i%26))+time.Duration(i).String(), aug, count)
	}
	if n := len(c.entries); n > closedMonthEntries {
		t.Fatalf("%d entries held; at most %d", n, closedMonthEntries)
	}
}
