package settle

import (
	"maps"
	"slices"
)

// The term rules of SPEC §2, written once: the engine settles by them and Terms (the query API's
// view of the accounts topic) collects by them, so a quote prices what the bill will.
//   - An (account, service) counts its first activation only.
//   - A pack_id counts once, whichever account names it.

// packIDs are the pack ids already counted.
type packIDs map[string]struct{}

// first records id and reports whether it was not counted before.
func (p packIDs) first(id string) bool {
	if _, dup := p[id]; dup {
		return false
	}
	p[id] = struct{}{}
	return true
}

// Terms are accounts' activations, prepaid packs and contract prices, per (account, service) in
// log order, as QuoteUsage takes them. Not safe for concurrent use.
type Terms struct {
	byAccount map[string]map[string][]Input
	activated map[string]map[string]bool
	packs     packIDs
}

// NewTerms is an empty collection.
func NewTerms() *Terms {
	return &Terms{byAccount: map[string]map[string][]Input{}, activated: map[string]map[string]bool{}, packs: packIDs{}}
}

// Add records in if it is a term that counts; it reports whether it did. Other inputs (usage,
// ledger replies, ticks) are not terms.
func (t *Terms) Add(in Input) bool {
	var account, service string
	switch in := in.(type) {
	case Activation:
		account, service = in.Account, in.Service
		if t.activated[account][service] {
			return false
		}
		if t.activated[account] == nil {
			t.activated[account] = map[string]bool{}
		}
		t.activated[account][service] = true
	case PackPurchase:
		if !t.packs.first(in.PackID) {
			return false
		}
		account, service = in.Account, in.Service
	case PriceOverride:
		account, service = in.Account, in.Service
	default:
		return false
	}
	byService := t.byAccount[account]
	if byService == nil {
		byService = map[string][]Input{}
		t.byAccount[account] = byService
	}
	byService[service] = append(byService[service], in)
	return true
}

// Of are the terms of (account, service), in log order; the caller may keep the slice.
func (t *Terms) Of(account, service string) []Input {
	return slices.Clone(t.byAccount[account][service])
}

// Services are the services the account has terms for, sorted.
func (t *Terms) Services(account string) []string {
	return slices.Sorted(maps.Keys(t.byAccount[account]))
}
