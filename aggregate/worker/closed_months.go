package worker

import (
	"maps"
	"sync"
	"time"

	"github.com/tally-billing/tally/contract"
)

// Closed-month answers are cached: each one is an exact recount (FINAL) of the month's
// usage_events, so a client asking for the same old month over and over would otherwise make
// ClickHouse merge it each time. Usage that arrives late for a month this old is rare; it shows
// within closedMonthTTL.
const (
	closedMonthTTL     = time.Minute
	closedMonthEntries = 10_000
)

// closedMonths is the cache of recounts by (account, month); the zero value is ready.
type closedMonths struct {
	mu      sync.Mutex
	entries map[closedMonth]recounted
	now     func() time.Time // real time; nil is time.Now
}

type closedMonth struct {
	account string
	period  contract.Period
}

type recounted struct {
	totals map[string]int64
	at     time.Time
}

// get answers from the cache, or from count (kept when it succeeds). The caller owns the map.
func (c *closedMonths) get(account string, p contract.Period, count func() (map[string]int64, error)) (map[string]int64, error) {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	key := closedMonth{account, p}
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && now().Sub(e.at) < closedMonthTTL {
		return maps.Clone(e.totals), nil
	}
	totals, err := count()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[closedMonth]recounted{}
	}
	if len(c.entries) >= closedMonthEntries {
		c.evict(now())
	}
	c.entries[key] = recounted{totals: maps.Clone(totals), at: now()}
	return totals, nil
}

// evict drops the expired entries, and when none had, one entry (any: a full cache of live
// entries is a client walking through accounts, not one asking again).
func (c *closedMonths) evict(now time.Time) {
	before := len(c.entries)
	maps.DeleteFunc(c.entries, func(_ closedMonth, e recounted) bool { return now.Sub(e.at) >= closedMonthTTL })
	if len(c.entries) < before {
		return
	}
	for k := range c.entries {
		delete(c.entries, k)
		return
	}
}
