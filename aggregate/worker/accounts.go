package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/settle"
)

// Accounts follows the accounts topic (activations and contract prices) so the query API can
// price running totals the way the bill will. Every instance reads every partition.
type Accounts struct {
	brokers []string
	topic   string
	cat     *settle.Catalogue
	log     *slog.Logger

	mu        sync.RWMutex
	activated map[[2]string]time.Time
	overrides map[[2]string][]settle.PriceOverride
}

// NewAccounts builds the follower.
func NewAccounts(brokers []string, topic string, cat *settle.Catalogue, log *slog.Logger) *Accounts {
	return &Accounts{brokers: brokers, topic: topic, cat: cat, log: log, activated: map[[2]string]time.Time{}, overrides: map[[2]string][]settle.PriceOverride{}}
}

// Run follows every partition from the beginning until ctx ends.
func (a *Accounts) Run(ctx context.Context) error {
	return kafkax.Follow(ctx, a.brokers, a.topic, a.apply)
}

func (a *Accounts) apply(m kafka.Message) {
	ev, err := cloudevent.Decode(m.Value)
	if err != nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = m.Time
	}
	in, err := settle.DecodeInput(ev, m.Time, a.cat)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch in := in.(type) {
	case settle.Activation:
		k := [2]string{in.Account, in.Service}
		if _, ok := a.activated[k]; !ok {
			a.activated[k] = in.At
		}
	case settle.PriceOverride:
		k := [2]string{in.Account, in.Service}
		a.overrides[k] = append(a.overrides[k], in)
	}
}

// Terms says whether the service is activated for the period and which contract tiers apply.
func (a *Accounts) Terms(account, service string, p settle.Period, loc *time.Location) (activated bool, contract []settle.Tier) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	k := [2]string{account, service}
	if at, ok := a.activated[k]; ok && at.Before(p.End(loc)) {
		activated = true
	}
	start := p.Start(loc)
	var best *settle.PriceOverride
	for i, o := range a.overrides[k] {
		if !o.EffectiveFrom.After(start) && (best == nil || !o.EffectiveFrom.Before(best.EffectiveFrom)) {
			best = &a.overrides[k][i]
		}
	}
	if best != nil {
		contract = best.Tiers
	}
	return activated, contract
}
