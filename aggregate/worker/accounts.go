package worker

import (
	"context"
	"log/slog"
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/settle"
)

// Accounts follows the accounts topic (activations, prepaid packs and contract prices) so the
// query API can price running totals the way the bill will. Every instance reads every partition.
type Accounts struct {
	cluster kafkax.Cluster
	topic   string
	cat     *settle.Catalogue
	log     *slog.Logger
	loading

	mu    sync.RWMutex
	terms *settle.Terms
}

// NewAccounts builds the follower.
func NewAccounts(cluster kafkax.Cluster, topic string, cat *settle.Catalogue, log *slog.Logger) *Accounts {
	return &Accounts{cluster: cluster, topic: topic, cat: cat, log: log, loading: loading{topic: topic}, terms: settle.NewTerms()}
}

// Run follows every partition from the beginning until ctx ends.
func (a *Accounts) Run(ctx context.Context) error {
	return kafkax.Follow(ctx, kafkax.FollowConfig{Brokers: a.cluster.Brokers, Security: a.cluster.Security, Topic: a.topic, CaughtUp: a.caughtUp, Failing: a.readFailing, Log: a.log}, a.apply)
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
	a.terms.Add(in)
}

// Terms are the account's activation, prepaid packs and contract prices of a service, in log
// order, as settle.QuoteUsage takes them.
func (a *Accounts) Terms(account, service string) []settle.Input {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.terms.Of(account, service)
}

// Services are the services the account has terms for, sorted.
func (a *Accounts) Services(account string) []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.terms.Services(account)
}
