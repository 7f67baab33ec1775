package settle

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// --- inputs ---

// Input is one validated input event for the engine.
type Input interface{ inputAccount() string }

// Usage is a validated usage event (contract.Usage) as an engine input.
type Usage struct{ contract.Usage }

// Activation: the account activated a service at At.
type Activation struct {
	Account, Service string
	At               time.Time
}

// PackPurchase: a prepaid pack of Calls calls of Service, valid in [ValidFrom, ValidUntil).
type PackPurchase struct {
	Account, Service, PackID string
	Calls                    int64
	ValidFrom, ValidUntil    time.Time
}

// PriceOverride: contract prices for (Account, Service) from EffectiveFrom on.
type PriceOverride struct {
	Account, Service string
	EffectiveFrom    time.Time
	Tiers            []Tier
}

// HoldReply is the ledger's answer to a hold request.
type HoldReply struct {
	Account, HoldID, Reason string
	Placed                  bool
}

// Tick moves the clock and changes nothing else.
type Tick struct{}

// Recharge: the ledger reports a top-up of the account's balance.
type Recharge struct {
	Account string
	Amount  decimal.Decimal
}

func (u Usage) inputAccount() string         { return u.Account }
func (a Activation) inputAccount() string    { return a.Account }
func (p PackPurchase) inputAccount() string  { return p.Account }
func (o PriceOverride) inputAccount() string { return o.Account }
func (h HoldReply) inputAccount() string     { return h.Account }
func (r Recharge) inputAccount() string      { return r.Account }
func (Tick) inputAccount() string            { return "" }

// DecodeInput validates a CloudEvent of any input type received at receivedAt. Errors are
// *cloudevent.Error with a reason for the sender.
func DecodeInput(ev cloudevent.Event, receivedAt time.Time, cat *Catalogue) (Input, error) {
	switch ev.Type {
	case contract.UsageType:
		u, err := contract.ParseUsage(ev, receivedAt, cat)
		return Usage{u}, err
	case contract.ActivatedType:
		var d struct {
			Account string `json:"account"`
			Service string `json:"service"`
		}
		if err := decodeAccountData(ev, &d, &d.Account); err != nil {
			return nil, err
		}
		if err := cat.CheckService(d.Service, ev.Time); err != nil {
			return nil, invalid("data.service: %v", err)
		}
		return Activation{Account: d.Account, Service: d.Service, At: ev.Time}, nil
	case contract.PackPurchasedType:
		var d struct {
			Account    string          `json:"account"`
			Service    string          `json:"service"`
			PackID     string          `json:"pack_id"`
			Calls      json.RawMessage `json:"calls"`
			ValidFrom  string          `json:"valid_from"`
			ValidUntil string          `json:"valid_until"`
		}
		if err := decodeAccountData(ev, &d, &d.Account); err != nil {
			return nil, err
		}
		if err := cat.CheckService(d.Service, ev.Time); err != nil {
			return nil, invalid("data.service: %v", err)
		}
		if cat.IsBeta(d.Service, ev.Time) {
			return nil, invalid("data.service: %q is in free beta and has no prepaid packs", d.Service)
		}
		if d.PackID == "" {
			return nil, invalid("data.pack_id is missing")
		}
		calls, ok := cloudevent.Int64(d.Calls)
		if !ok || calls < 1 {
			return nil, invalid("data.calls %s must be a positive integer", d.Calls)
		}
		from, err1 := cloudevent.ParseTime(d.ValidFrom)
		until, err2 := cloudevent.ParseTime(d.ValidUntil)
		if err1 != nil {
			return nil, invalid("data.valid_from: %v", err1)
		}
		if err2 != nil {
			return nil, invalid("data.valid_until: %v", err2)
		}
		if !until.After(from) {
			return nil, invalid("data.valid_until must be after data.valid_from")
		}
		return PackPurchase{Account: d.Account, Service: d.Service, PackID: d.PackID, Calls: calls, ValidFrom: from, ValidUntil: until}, nil
	case contract.PriceOverrideType:
		var d struct {
			Account       string     `json:"account"`
			Service       string     `json:"service"`
			EffectiveFrom string     `json:"effective_from"`
			Tiers         []tierFile `json:"tiers"`
		}
		if err := decodeAccountData(ev, &d, &d.Account); err != nil {
			return nil, err
		}
		if cat.Service(d.Service) == nil {
			return nil, invalid("data.service: unknown service %q", d.Service)
		}
		from, err := cloudevent.ParseTime(d.EffectiveFrom)
		if err != nil {
			return nil, invalid("data.effective_from: %v", err)
		}
		tiers, errs := parseTiers("data.tiers", d.Tiers)
		if len(errs) > 0 {
			return nil, invalid("%v", errors.Join(errs...))
		}
		return PriceOverride{Account: d.Account, Service: d.Service, EffectiveFrom: from, Tiers: tiers}, nil
	case contract.HoldPlacedType, contract.HoldFailedType:
		var d struct {
			Account string `json:"account"`
			HoldID  string `json:"hold_id"`
			Reason  string `json:"reason"`
		}
		if err := decodeAccountData(ev, &d, &d.Account); err != nil {
			return nil, err
		}
		if d.HoldID == "" {
			return nil, invalid("data.hold_id is missing")
		}
		return HoldReply{Account: d.Account, HoldID: d.HoldID, Reason: d.Reason, Placed: ev.Type == contract.HoldPlacedType}, nil
	case contract.RechargedType:
		var d struct {
			Account string `json:"account"`
			Amount  string `json:"amount"`
		}
		if err := decodeAccountData(ev, &d, &d.Account); err != nil {
			return nil, err
		}
		amt, err := decimal.NewFromString(d.Amount)
		if err != nil {
			return nil, invalid("data.amount %q is not a decimal string", d.Amount)
		}
		return Recharge{Account: d.Account, Amount: amt}, nil
	case contract.ClockTickType:
		// The settle worker records in "offsets" which usage records each tick covered; the
		// billing core only needs the instant.
		var d contract.ClockTickData
		if err := cloudevent.DecodeData(ev.Data, &d); err != nil {
			return nil, err
		}
		return Tick{}, nil
	default:
		return nil, invalid("type %q is not an input Tally accepts", ev.Type)
	}
}

func decodeAccountData(ev cloudevent.Event, v any, account *string) error {
	if err := cloudevent.DecodeData(ev.Data, v); err != nil {
		return err
	}
	return contract.ValidateAccount(*account)
}

func invalid(format string, args ...any) error { return cloudevent.Invalid("data", format, args...) }
