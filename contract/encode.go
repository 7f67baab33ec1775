package contract

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tally-billing/tally/internal/cloudevent"
)

// Event is an input event as a client writes it: a structured-mode CloudEvent (SPEC §4) whose
// Data is one of the *Data types below. Encode is the one way Tally's own code (the demo, the
// load generator, the settle worker's journal, exports, tests) writes input events, so ids,
// accounts and prices are JSON-escaped, never Go-quoted.
type Event struct {
	ID, Source, Type string
	Time             time.Time
	// RecordedAt, when not zero, is when Tally received the event (logs written for replay).
	RecordedAt time.Time
	// Request, when set, is the digest of the console request the event was made from (the
	// accounts API's tallyrequest extension): it tells a retry of that request from another
	// change sent with the same id.
	Request string
	Data    any
}

// wireEvent fixes the field order, so encoded bytes are reproducible.
type wireEvent struct {
	SpecVersion string `json:"specversion"`
	ID          string `json:"id"`
	Source      string `json:"source"`
	Type        string `json:"type"`
	Time        string `json:"time"`
	RecordedAt  string `json:"recordedat,omitempty"`
	Request     string `json:"tallyrequest,omitempty"`
	Data        any    `json:"data"`
}

// Encode writes e as one line of JSON (no trailing newline). Times keep their location. An
// envelope string that is not UTF-8 is refused: JSON would carry it only altered (encoding/json
// writes U+FFFD for each bad byte), and an altered id is another event.
func Encode(e Event) ([]byte, error) {
	for _, f := range [...]struct{ name, v string }{{"id", e.ID}, {"source", e.Source}, {"type", e.Type}} {
		if !utf8.ValidString(f.v) {
			return nil, fmt.Errorf("contract: encode: %s %q is not UTF-8", f.name, f.v)
		}
	}
	w := wireEvent{SpecVersion: cloudevent.SpecVersion, ID: e.ID, Source: e.Source, Type: e.Type, Time: cloudevent.FormatTime(e.Time), Request: e.Request, Data: e.Data}
	if !e.RecordedAt.IsZero() {
		w.RecordedAt = cloudevent.FormatTime(e.RecordedAt)
	}
	return json.Marshal(w)
}

// MustEncode is Encode for data that always encodes (strings, numbers, the types below); it
// panics otherwise, which is a bug in the caller.
func MustEncode(e Event) []byte {
	raw, err := Encode(e)
	if err != nil {
		panic("contract: encode " + e.Type + ": " + err.Error())
	}
	return raw
}

// UsageData is the data of tally.usage.v1.
type UsageData struct {
	Account string `json:"account"`
	Service string `json:"service"`
	Calls   int64  `json:"calls"`
}

// ActivationData is the data of tally.service.activated.v1.
type ActivationData struct {
	Account string `json:"account"`
	Service string `json:"service"`
}

// PackPurchaseData is the data of tally.pack.purchased.v1; the validity window is RFC 3339.
type PackPurchaseData struct {
	Account    string `json:"account"`
	Service    string `json:"service"`
	PackID     string `json:"pack_id"`
	Calls      int64  `json:"calls"`
	ValidFrom  string `json:"valid_from"`
	ValidUntil string `json:"valid_until"`
}

// PriceOverrideData is the data of tally.price.override.v1.
type PriceOverrideData struct {
	Account       string     `json:"account"`
	Service       string     `json:"service"`
	EffectiveFrom string     `json:"effective_from"`
	Tiers         []TierData `json:"tiers"`
}

// TierData is a reach tier on the wire: from this many calls of the month on, UnitPrice (a decimal
// string) per 1,000 calls.
type TierData struct {
	FromCalls int64  `json:"from_calls"`
	UnitPrice string `json:"unit_price"`
}

// HoldReplyData is the data of tally.ledger.hold.placed.v1 and tally.ledger.hold.failed.v1.
type HoldReplyData struct {
	Account string `json:"account"`
	HoldID  string `json:"hold_id"`
	Reason  string `json:"reason,omitempty"`
}

// RechargeData is the data of tally.ledger.recharged.v1; Amount is a decimal string.
type RechargeData struct {
	Account string `json:"account"`
	Amount  string `json:"amount"`
}

// ClockTickData is the data of tally.clock.tick.v1: for each usage partition (its number in
// decimal), the offset up to which the tick's settlement covered the usage topic.
type ClockTickData struct {
	Offsets map[string]int64 `json:"offsets"`
}
