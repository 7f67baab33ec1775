package settle

import (
	"fmt"
)

// QuoteRequest asks what a month's calls of one service cost.
type QuoteRequest struct {
	Service string
	Period  Period
	// Calls is the month's total; PrepaidCalls of them are covered by prepaid packs.
	Calls, PrepaidCalls int64
	// Activated: the service is activated (the free pack applies).
	Activated bool
	// Contract, when not nil, is the account's contract price for the month.
	Contract []Tier
}

// Quote is the bill line the calls would get, and what they cost at list prices.
type Quote struct {
	Line       BillLine
	ListAmount string
}

// QuoteMonth prices a month's calls with the same rules as settlement: reach tier by total calls,
// the free pack first, then prepaid calls, the rest billed, rounded half-up to 0.01.
func QuoteMonth(cfg Config, q QuoteRequest) (Quote, error) {
	if err := cfg.Validate(); err != nil {
		return Quote{}, err
	}
	if cfg.Catalogue.Service(q.Service) == nil {
		return Quote{}, fmt.Errorf("unknown service %q (known: %v)", q.Service, cfg.Catalogue.ServiceIDs())
	}
	if q.Calls < 0 || q.PrepaidCalls < 0 {
		return Quote{}, fmt.Errorf("calls must not be negative")
	}
	s := &serviceState{id: q.Service}
	if q.Activated {
		s.activated, s.activatedAt = true, q.Period.Start(cfg.Location)
	}
	if q.Contract != nil {
		s.overrides = []PriceOverride{{Service: q.Service, EffectiveFrom: q.Period.Start(cfg.Location), Tiers: q.Contract}}
	}
	m := s.addMonth(q.Period)
	m.total = q.Calls
	m.series = []timedCalls{{at: q.Period.Start(cfg.Location).UnixNano(), calls: q.Calls}}
	if q.PrepaidCalls > 0 {
		end := q.Period.End(cfg.Location)
		s.packs = []*pack{{id: "quote", calls: q.PrepaidCalls, validFrom: q.Period.Start(cfg.Location), validUntil: end}}
	}
	e := &Engine{cfg: cfg}
	line, _, list, err := e.line(q.Service, s, q.Period)
	if err != nil {
		return Quote{}, err
	}
	return Quote{Line: line, ListAmount: list.String()}, nil
}
