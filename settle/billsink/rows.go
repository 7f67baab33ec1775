package billsink

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// rows are one batch's rows, by table.
type rows struct {
	bills       []billRow
	lines       []lineRow
	adjustments []adjustmentRow
	holds       []holdRow
	statuses    []statusRow
}

type billRow struct {
	billID, account string
	period          uint32
	currency        string
	total           decimal.Decimal
	issuedAt        time.Time
	partition       int32
	offset          int64
}

type lineRow struct {
	billID, account string
	period          uint32
	contract.BillLine
	unitPrice, amount decimal.Decimal
	issuedAt          time.Time
}

type adjustmentRow struct {
	billID, account            string
	billPeriod, adjustedPeriod uint32
	service                    string
	callsBefore, callsAfter    int64
	amount                     decimal.Decimal
	issuedAt                   time.Time
}

type holdRow struct {
	eventID, kind, holdID, account string
	amount                         decimal.Decimal
	forPeriod, basisPeriod         uint32
	at                             time.Time
}

type statusRow struct {
	eventID, account, status, reason string
	at                               time.Time
}

// Skip reasons: an event of the billing topic the tables cannot hold.
const (
	SkipNotCloudEvent = "not_a_cloudevent"
	SkipUnknownType   = "unknown_type"
	SkipBadData       = "bad_data"
)

// skipped is an event left out of the tables, with the reason.
type skipped struct {
	reason string
	err    error
}

func (s *skipped) Error() string { return s.err.Error() }

// add reads one record of the billing topic into the batch's rows; a record that is no event
// of SPEC §4's outputs is a *skipped, and adds nothing.
func (r *rows) add(value []byte, partition int32, offset int64) error {
	ev, err := cloudevent.Decode(value)
	if err != nil {
		return &skipped{SkipNotCloudEvent, err}
	}
	bad := func(err error) error { return &skipped{SkipBadData, fmt.Errorf("%s %s: %w", ev.Type, ev.ID, err)} }
	at := ev.Time.UTC()
	switch ev.Type {
	case contract.BillIssuedType:
		var b contract.Bill
		if err := json.Unmarshal(ev.Data, &b); err != nil {
			return bad(err)
		}
		period, err := yyyymm(b.Period)
		if err != nil {
			return bad(err)
		}
		total, err := money(b.Total, 2)
		if err != nil {
			return bad(fmt.Errorf("total: %w", err))
		}
		var lines []lineRow
		for _, l := range b.Lines {
			row := lineRow{billID: b.BillID, account: b.Account, period: period, BillLine: l, issuedAt: at}
			if row.unitPrice, err = money(l.UnitPrice, 10); err != nil {
				return bad(fmt.Errorf("line %s: unit price: %w", l.Service, err))
			}
			if row.amount, err = money(l.Amount, 2); err != nil {
				return bad(fmt.Errorf("line %s: amount: %w", l.Service, err))
			}
			lines = append(lines, row)
		}
		var adjustments []adjustmentRow
		for _, a := range b.Adjustments {
			row := adjustmentRow{billID: b.BillID, account: b.Account, billPeriod: period, service: a.Service,
				callsBefore: a.CallsBefore, callsAfter: a.CallsAfter, issuedAt: at}
			if row.adjustedPeriod, err = yyyymm(a.Period); err != nil {
				return bad(fmt.Errorf("adjustment: %w", err))
			}
			if row.amount, err = money(a.Amount, 2); err != nil {
				return bad(fmt.Errorf("adjustment %s %s: amount: %w", a.Period, a.Service, err))
			}
			adjustments = append(adjustments, row)
		}
		r.bills = append(r.bills, billRow{billID: b.BillID, account: b.Account, period: period, currency: b.Currency, total: total,
			issuedAt: at, partition: partition, offset: offset})
		r.lines = append(r.lines, lines...)
		r.adjustments = append(r.adjustments, adjustments...)
	case contract.HoldRequestedType:
		var h contract.HoldRequested
		if err := json.Unmarshal(ev.Data, &h); err != nil {
			return bad(err)
		}
		row := holdRow{eventID: ev.ID, kind: "requested", holdID: h.HoldID, account: h.Account, at: at}
		if row.forPeriod, err = yyyymm(h.ForPeriod); err != nil {
			return bad(err)
		}
		if row.basisPeriod, err = yyyymm(h.BasisPeriod); err != nil {
			return bad(err)
		}
		if row.amount, err = money(h.Amount, 2); err != nil {
			return bad(err)
		}
		r.holds = append(r.holds, row)
	case contract.HoldReleasedType:
		var h contract.HoldReleased
		if err := json.Unmarshal(ev.Data, &h); err != nil {
			return bad(err)
		}
		row := holdRow{eventID: ev.ID, kind: "released", holdID: h.HoldID, account: h.Account, at: at}
		if row.amount, err = money(h.Amount, 2); err != nil {
			return bad(err)
		}
		r.holds = append(r.holds, row)
	case contract.AccountSuspendedType, contract.AccountResumedType:
		var s contract.AccountStatus
		if err := json.Unmarshal(ev.Data, &s); err != nil {
			return bad(err)
		}
		status := "suspended"
		if ev.Type == contract.AccountResumedType {
			status = "resumed"
		}
		r.statuses = append(r.statuses, statusRow{eventID: ev.ID, account: s.Account, status: status, reason: s.Reason, at: at})
	default:
		return &skipped{SkipUnknownType, fmt.Errorf("event %s has type %q, not one of Tally's billing outputs", ev.ID, ev.Type)}
	}
	return nil
}

func (r *rows) len() int {
	return len(r.bills) + len(r.lines) + len(r.adjustments) + len(r.holds) + len(r.statuses)
}

// yyyymm is a period "YYYY-MM" as the tables keep it.
func yyyymm(s string) (uint32, error) {
	p, err := contract.ParsePeriod(s)
	if err != nil {
		return 0, err
	}
	return p.YYYYMM(), nil
}

// money parses an exact decimal that fits its column (places digits after the point): rounding
// it into the column would change a bill.
func money(s string, places int32) (decimal.Decimal, error) {
	d, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Decimal{}, fmt.Errorf("%q is not a decimal", s)
	}
	if d.Exponent() < -places && !d.Equal(d.Truncate(places)) {
		return decimal.Decimal{}, fmt.Errorf("%q has more than %d decimal places", s, places)
	}
	if len(d.Truncate(0).Abs().String()) > 38-int(places) {
		return decimal.Decimal{}, fmt.Errorf("%q is too large", s)
	}
	return d, nil
}
