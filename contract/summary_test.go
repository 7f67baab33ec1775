package contract

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// summarize describes events as the settle worker's usage query does.
func summarize(events []Usage, receivedAt []time.Time) UsageSummary {
	var s UsageSummary
	for i, u := range events {
		s.Add(u, receivedAt[i])
	}
	return s
}

// A summary is plain exactly when every event it describes is: random groups of events, each
// near one of the limits, some across a service's retirement.
func TestUsageSummaryPlainIffEveryEventIs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ids := []string{"u1", "", strings.Repeat("x", MaxIDLen), strings.Repeat("y", MaxIDLen+1), "a\"b", "caf\u00e9", "tab\there", "ok-id"}
	calls := []int64{1, 0, 7, MaxCallsPerEvent, MaxCallsPerEvent + 1}
	accounts := []string{"acme", "bad account", ""}
	services := []string{"image-tagging", "old-service", "nope"}
	seen := map[bool]int{}
	for range 20_000 {
		n := 1 + rng.IntN(4)
		account, service := accounts[rng.IntN(len(accounts))], services[rng.IntN(len(services))]
		events, receivedAt := make([]Usage, n), make([]time.Time, n)
		for i := range events {
			at := retiredAt.Add(time.Duration(rng.IntN(48)-24) * time.Hour)
			got := at.Add(time.Duration(rng.IntN(20)-10) * time.Minute)
			if rng.IntN(3) == 0 {
				got = at.Add(-MaxClockSkew) // exactly at the limit
			}
			id, c := "id"+string(rune('a'+i)), int64(1+rng.IntN(9))
			if rng.IntN(4) == 0 {
				id = ids[rng.IntN(len(ids))]
			}
			if rng.IntN(4) == 0 {
				c = calls[rng.IntN(len(calls))]
			}
			events[i] = Usage{ID: id, Account: account, Service: service, Calls: c, Time: at}
			receivedAt[i] = got
		}
		want := true
		for i, u := range events {
			want = want && PlainUsage(u, receivedAt[i], catalogue{})
		}
		if got := summarize(events, receivedAt).Plain(catalogue{}); got != want {
			t.Fatalf("summary of %+v received %v: Plain = %v, every event plain = %v", events, receivedAt, got, want)
		}
		seen[want]++
	}
	if seen[true] < 1000 || seen[false] < 1000 {
		t.Fatalf("the generator is lopsided: %v", seen)
	}
}
