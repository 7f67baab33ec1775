package contract

// The event types of SPEC §4 and the data of the events Tally emits: what a gateway, a console, a
// ledger and every stage of Tally agree on.

// Input event types (SPEC §4) other than usage (UsageType).
const (
	ActivatedType     = "tally.service.activated.v1"
	PackPurchasedType = "tally.pack.purchased.v1"
	PriceOverrideType = "tally.price.override.v1"
	HoldPlacedType    = "tally.ledger.hold.placed.v1"
	HoldFailedType    = "tally.ledger.hold.failed.v1"
	RechargedType     = "tally.ledger.recharged.v1"
	// ClockTickType only moves the log's clock (its recordedat): the settle worker journals one
	// at each settlement instant, so a replay of its journal settles exactly when it did.
	ClockTickType = "tally.clock.tick.v1"
)

// Output event types, all on the billing topic keyed by account.
const (
	BillIssuedType       = "tally.bill.issued.v1"
	HoldReleasedType     = "tally.hold.released.v1"
	HoldRequestedType    = "tally.hold.requested.v1"
	AccountSuspendedType = "tally.account.suspended.v1"
	AccountResumedType   = "tally.account.resumed.v1"
)

// Account status reasons.
const (
	ReasonHoldFailed    = "hold_failed"
	ReasonHoldPlaced    = "hold_placed"
	ReasonNothingToHold = "nothing_to_hold"
)

// --- outputs (the contract a ledger consumes) ---

// Bill is the data of tally.bill.issued.v1.
type Bill struct {
	BillID      string       `json:"bill_id"`
	Account     string       `json:"account"`
	Period      string       `json:"period"`
	Currency    string       `json:"currency"`
	Lines       []BillLine   `json:"lines"`
	Adjustments []Adjustment `json:"adjustments"`
	Total       string       `json:"total"`
}

// BillLine is one service's usage and charge for the bill's period.
type BillLine struct {
	Service       string `json:"service"`
	Activated     bool   `json:"activated"`
	Calls         int64  `json:"calls"`
	FreeCalls     int64  `json:"free_calls"`
	PrepaidCalls  int64  `json:"prepaid_calls"`
	BillableCalls int64  `json:"billable_calls"`
	Tier          int    `json:"tier"`
	UnitPrice     string `json:"unit_price"`
	Amount        string `json:"amount"`
}

// Adjustment re-prices an already billed (period, service); Amount is the difference charged
// (negative: credited).
type Adjustment struct {
	Period      string `json:"period"`
	Service     string `json:"service"`
	CallsBefore int64  `json:"calls_before"`
	CallsAfter  int64  `json:"calls_after"`
	Amount      string `json:"amount"`
}

// HoldReleased is the data of tally.hold.released.v1.
type HoldReleased struct {
	HoldID  string `json:"hold_id"`
	Account string `json:"account"`
	Amount  string `json:"amount"`
}

// HoldRequested is the data of tally.hold.requested.v1.
type HoldRequested struct {
	HoldID      string `json:"hold_id"`
	Account     string `json:"account"`
	Amount      string `json:"amount"`
	ForPeriod   string `json:"for_period"`
	BasisPeriod string `json:"basis_period"`
}

// AccountStatus is the data of tally.account.suspended.v1 and tally.account.resumed.v1.
type AccountStatus struct {
	Account string `json:"account"`
	Reason  string `json:"reason"`
}

// BillID and HoldID are the deterministic ids of SPEC §4. They take the period in its wire form
// ("YYYY-MM", Period.String): settlement formats it once for all accounts.
func BillID(account, period string) string { return "bill:" + account + ":" + period }
func HoldID(account, period string) string { return "hold:" + account + ":" + period }
