package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
)

// History is the body of GET /v1/accounts/{account}/history: the account's last bills (with
// their lines and adjustments), holds and status changes, newest first, as `tally billsink`
// copied them from the billing topic into ClickHouse (bills, bill_lines, bill_adjustments,
// holds, account_status_changes).
type History struct {
	Account       string         `json:"account"`
	Bills         []HistoryBill  `json:"bills"`
	Holds         []HistoryHold  `json:"holds"`
	StatusChanges []StatusChange `json:"status_changes"`
	Limits        HistoryLimits  `json:"limits"`
}

// HistoryLimits are how many of each the answer holds at most; status changes are limited
// like holds (each hold failure or placement can bring one).
type HistoryLimits struct {
	Bills int `json:"bills"`
	Holds int `json:"holds"`
}

// HistoryBill is one bill as the billing topic carried it, with when it was issued.
type HistoryBill struct {
	contract.Bill
	IssuedAt string `json:"issued_at"`
}

// HistoryHold is a hold asked of the ledger, or released.
type HistoryHold struct {
	EventID string `json:"event_id"`
	Kind    string `json:"kind"` // requested or released
	HoldID  string `json:"hold_id"`
	Amount  string `json:"amount"`
	// ForPeriod and BasisPeriod of a request: the month held for and the one it is estimated from.
	ForPeriod   string `json:"for_period,omitempty"`
	BasisPeriod string `json:"basis_period,omitempty"`
	At          string `json:"at"`
}

// StatusChange is a suspension or a resumption.
type StatusChange struct {
	Status string `json:"status"` // suspended or resumed
	Reason string `json:"reason"`
	At     string `json:"at"`
}

const (
	defaultHistoryBills = 6
	defaultHistoryHolds = 20
	maxHistory          = 100
)

func (a *API) history(w http.ResponseWriter, r *http.Request) {
	account := r.PathValue("account")
	if err := contract.ValidateAccount(account); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	limits := HistoryLimits{Bills: defaultHistoryBills, Holds: defaultHistoryHolds}
	for name, n := range map[string]*int{"bills": &limits.Bills, "holds": &limits.Holds} {
		if v := r.URL.Query().Get(name); v != "" {
			k, err := strconv.Atoi(v)
			if err != nil || k < 0 || k > maxHistory {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("%s must be a whole number from 0 to %d", name, maxHistory))
				return
			}
			*n = k
		}
	}
	h, err := a.accountHistory(r.Context(), account, limits)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, h)
}

// accountHistory reads the account's history from the billsink's tables, each with FINAL: a
// batch the billsink wrote twice counts once.
func (a *API) accountHistory(ctx context.Context, account string, limits HistoryLimits) (History, error) {
	h := History{Account: account, Bills: []HistoryBill{}, Holds: []HistoryHold{}, StatusChanges: []StatusChange{}, Limits: limits}
	if a.Usage == nil {
		return h, errors.New("no ClickHouse connection: the history is in the billsink's tables")
	}
	loc := a.Billing.Location
	if loc == nil {
		loc = time.UTC
	}
	at := func(t time.Time) string { return t.In(loc).Format(time.RFC3339) }
	period := func(n uint32) string { return contract.PeriodOfYYYYMM(n).String() }
	fail := func(what string, err error) (History, error) {
		return History{}, fmt.Errorf("read the %s (filled by `tally billsink`; `tally migrate` creates its tables): %w", what, err)
	}

	byPeriod := map[uint32]int{}
	oldest := uint32(0)
	err := a.eachRow(ctx, "SELECT bill_id, period, currency, total, issued_at FROM bills FINAL WHERE account = ? ORDER BY period DESC LIMIT ?",
		[]any{account, limits.Bills}, func(rows driver.Rows) error {
			b := HistoryBill{Bill: contract.Bill{Account: account, Lines: []contract.BillLine{}, Adjustments: []contract.Adjustment{}}}
			var p uint32
			var total decimal.Decimal
			var issued time.Time
			if err := rows.Scan(&b.BillID, &p, &b.Currency, &total, &issued); err != nil {
				return err
			}
			b.Period, b.Total, b.IssuedAt = period(p), total.StringFixed(2), at(issued)
			byPeriod[p] = len(h.Bills)
			h.Bills = append(h.Bills, b)
			oldest = p
			return nil
		})
	if err != nil {
		return fail("bills", err)
	}
	if len(h.Bills) > 0 {
		err := a.eachRow(ctx, `SELECT period, service, activated, calls, free_calls, prepaid_calls, billable_calls, tier, unit_price, amount
			FROM bill_lines FINAL WHERE account = ? AND period >= ? ORDER BY period, service`, []any{account, oldest}, func(rows driver.Rows) error {
			var p uint32
			var l contract.BillLine
			var tier uint16
			var unit, amount decimal.Decimal
			if err := rows.Scan(&p, &l.Service, &l.Activated, &l.Calls, &l.FreeCalls, &l.PrepaidCalls, &l.BillableCalls, &tier, &unit, &amount); err != nil {
				return err
			}
			if i, ok := byPeriod[p]; ok {
				l.Tier, l.UnitPrice, l.Amount = int(tier), unit.String(), amount.StringFixed(2)
				h.Bills[i].Lines = append(h.Bills[i].Lines, l)
			}
			return nil
		})
		if err != nil {
			return fail("bill lines", err)
		}
		err = a.eachRow(ctx, `SELECT bill_period, adjusted_period, service, calls_before, calls_after, amount
			FROM bill_adjustments FINAL WHERE account = ? AND bill_period >= ? ORDER BY bill_period, adjusted_period, service`, []any{account, oldest}, func(rows driver.Rows) error {
			var p, adjusted uint32
			var adj contract.Adjustment
			var amount decimal.Decimal
			if err := rows.Scan(&p, &adjusted, &adj.Service, &adj.CallsBefore, &adj.CallsAfter, &amount); err != nil {
				return err
			}
			if i, ok := byPeriod[p]; ok {
				adj.Period, adj.Amount = period(adjusted), amount.StringFixed(2)
				h.Bills[i].Adjustments = append(h.Bills[i].Adjustments, adj)
			}
			return nil
		})
		if err != nil {
			return fail("bill adjustments", err)
		}
	}

	err = a.eachRow(ctx, `SELECT event_id, toString(kind), hold_id, amount, for_period, basis_period, at
		FROM holds FINAL WHERE account = ? ORDER BY at DESC, event_id DESC LIMIT ?`, []any{account, limits.Holds}, func(rows driver.Rows) error {
		var hold HistoryHold
		var amount decimal.Decimal
		var forPeriod, basis uint32
		var when time.Time
		if err := rows.Scan(&hold.EventID, &hold.Kind, &hold.HoldID, &amount, &forPeriod, &basis, &when); err != nil {
			return err
		}
		hold.Amount, hold.At = amount.StringFixed(2), at(when)
		if forPeriod != 0 {
			hold.ForPeriod, hold.BasisPeriod = period(forPeriod), period(basis)
		}
		h.Holds = append(h.Holds, hold)
		return nil
	})
	if err != nil {
		return fail("holds", err)
	}

	err = a.eachRow(ctx, `SELECT toString(status), reason, at FROM account_status_changes FINAL WHERE account = ?
		ORDER BY at DESC, event_id DESC LIMIT ?`, []any{account, limits.Holds}, func(rows driver.Rows) error {
		var s StatusChange
		var when time.Time
		if err := rows.Scan(&s.Status, &s.Reason, &when); err != nil {
			return err
		}
		s.At = at(when)
		h.StatusChanges = append(h.StatusChanges, s)
		return nil
	})
	if err != nil {
		return fail("status changes", err)
	}
	return h, nil
}

// eachRow runs query and hands every row to scan, stopping at the first error.
func (a *API) eachRow(ctx context.Context, query string, args []any, scan func(driver.Rows) error) error {
	rows, err := a.Usage.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
