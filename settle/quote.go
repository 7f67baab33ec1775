package settle

import (
	"errors"
	"fmt"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// CallsAt is a number of calls that occurred at one instant. A quote may bucket calls (one
// CallsAt standing for many) as long as no bucket crosses a month start or a prepaid pack's
// valid_from or valid_until: the rules only ask which month and which packs' windows a call is in.
type CallsAt struct {
	At    time.Time
	Calls int64
}

// UsageQuoteRequest asks what one (account, service) month costs so far, priced the way its
// settlement will price it.
type UsageQuoteRequest struct {
	Account, Service string
	Period           contract.Period
	// Terms are the account's activations, prepaid packs and contract prices of the service, in
	// log order (duplicates are handled as settlement handles them).
	Terms []Input
	// Calls of the period and of every earlier month a pack in Terms could have covered; later
	// months are ignored.
	Calls []CallsAt
	// AsOf is the instant "calls left" refers to: a pack that expires at or before it has none
	// left to use.
	AsOf time.Time
}

// UsageQuote is the bill line the period's calls would get, what they cost at list prices, and
// the calls left in the service's prepaid packs usable in the period after AsOf.
type UsageQuote struct {
	Line             contract.BillLine
	ListAmount       string
	PrepaidCallsLeft int64
}

// QuoteUsage prices a month of one (account, service) with the settlement engine's own rules:
// reach tier by total calls, the free pack first, then prepaid packs soonest-expiring first
// (carried over from earlier months in time order), the rest billed, rounded half-up to 0.01.
func QuoteUsage(cfg Config, q UsageQuoteRequest) (UsageQuote, error) {
	e, err := New(cfg, func(cloudevent.Out) error { return errors.New("settle: a quote emits nothing") })
	if err != nil {
		return UsageQuote{}, err
	}
	if cfg.Catalogue.Service(q.Service) == nil {
		return UsageQuote{}, fmt.Errorf("unknown service %q (known: %v)", q.Service, cfg.Catalogue.ServiceIDs())
	}
	for _, in := range q.Terms {
		account, service, ok := termOf(in)
		if !ok {
			return UsageQuote{}, fmt.Errorf("settle: a quote's terms are activations, packs and contract prices, not %T", in)
		}
		if account != q.Account || service != q.Service {
			return UsageQuote{}, fmt.Errorf("settle: a term of %s/%s in the quote of %s/%s", account, service, q.Account, q.Service)
		}
		if err := e.Apply(in, q.AsOf); err != nil {
			return UsageQuote{}, err
		}
	}
	s := e.account(q.Account).service(q.Service)
	for _, c := range q.Calls {
		if c.Calls < 0 {
			return UsageQuote{}, fmt.Errorf("settle: %d calls at %s: calls must not be negative", c.Calls, c.At.Format(time.RFC3339Nano))
		}
		m := contract.PeriodOf(c.At, cfg.Location)
		if q.Period.Before(m) {
			continue
		}
		mu := s.month(m)
		if mu == nil {
			mu = s.addMonth(m)
		}
		mu.add(c.At.UnixNano(), c.Calls)
	}
	if s.month(q.Period) == nil {
		s.addMonth(q.Period)
	}
	line, _, list, err := e.line(q.Service, s, q.Period)
	if err != nil {
		return UsageQuote{}, err
	}
	out := UsageQuote{Line: line, ListAmount: list.String()}
	d := e.derive(s, q.Period)
	end := q.Period.End(cfg.Location)
	for i, pk := range s.packs() {
		if pk.validUntil.After(q.AsOf) && pk.validFrom.Before(end) {
			out.PrepaidCallsLeft += d.packsLeft[i]
		}
	}
	return out, nil
}

func termOf(in Input) (account, service string, ok bool) {
	switch in := in.(type) {
	case Activation:
		return in.Account, in.Service, true
	case PackPurchase:
		return in.Account, in.Service, true
	case PriceOverride:
		return in.Account, in.Service, true
	}
	return "", "", false
}

// PackWindowBounds are the instants, sorted and distinct, where the set of valid packs among
// terms changes. Calls between two consecutive bounds, within one month, can be counted as one
// CallsAt in a quote.
func PackWindowBounds(terms []Input) []time.Time {
	var packs []*pack
	for _, in := range terms {
		if p, ok := in.(PackPurchase); ok {
			packs = append(packs, &pack{validFrom: p.ValidFrom, validUntil: p.ValidUntil})
		}
	}
	return packBounds(packs)
}

// QuoteRequest asks what a month's calls of one service cost, without their history.
type QuoteRequest struct {
	Service string
	Period  contract.Period
	// Calls is the month's total; PrepaidCalls of them are covered by prepaid packs.
	Calls, PrepaidCalls int64
	// Activated: the service is activated (the free pack applies).
	Activated bool
	// Contract, when not nil, is the account's contract price for the month.
	Contract []Tier
}

// Quote is the bill line the calls would get, and what they cost at list prices.
type Quote struct {
	Line       contract.BillLine
	ListAmount string
}

// QuoteMonth prices a month's calls as QuoteUsage does: the free pack first, then PrepaidCalls,
// the rest billed.
func QuoteMonth(cfg Config, q QuoteRequest) (Quote, error) {
	if q.Calls < 0 || q.PrepaidCalls < 0 {
		return Quote{}, fmt.Errorf("calls must not be negative")
	}
	const account = "quote"
	start, end := q.Period.Start(cfg.Location), q.Period.End(cfg.Location)
	var terms []Input
	if q.Activated {
		terms = append(terms, Activation{Account: account, Service: q.Service, At: start})
	}
	if q.Contract != nil {
		terms = append(terms, PriceOverride{Account: account, Service: q.Service, EffectiveFrom: start, Tiers: q.Contract})
	}
	if q.PrepaidCalls > 0 {
		terms = append(terms, PackPurchase{Account: account, Service: q.Service, PackID: "quote", Calls: q.PrepaidCalls, ValidFrom: start, ValidUntil: end})
	}
	u, err := QuoteUsage(cfg, UsageQuoteRequest{Account: account, Service: q.Service, Period: q.Period, Terms: terms,
		Calls: []CallsAt{{At: start, Calls: q.Calls}}, AsOf: start})
	if err != nil {
		return Quote{}, err
	}
	return Quote{Line: u.Line, ListAmount: u.ListAmount}, nil
}
