package worker

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/settle"
)

// ServiceUsage is one service's running month in the usage API.
type ServiceUsage struct {
	Service   string `json:"service"`
	Calls     int64  `json:"calls"`
	Activated bool   `json:"activated"`
	// FreeCallsLeft of the month's free pack; PrepaidCalls of the month's calls are covered by
	// prepaid packs, which have PrepaidCallsLeft calls left usable in the month.
	FreeCallsLeft    int64  `json:"free_calls_left"`
	PrepaidCalls     int64  `json:"prepaid_calls"`
	PrepaidCallsLeft int64  `json:"prepaid_calls_left"`
	BillableCalls    int64  `json:"billable_calls"`
	Tier             int    `json:"tier"`
	UnitPrice        string `json:"unit_price"`
	AmountSoFar      string `json:"amount_so_far"`
}

// UsageResponse is the body of GET /v1/accounts/{account}/usage.
type UsageResponse struct {
	Account  string         `json:"account"`
	Period   string         `json:"period"`
	Currency string         `json:"currency"`
	Services []ServiceUsage `json:"services"`
}

// API serves the running totals, priced by the billing core.
type API struct {
	Worker   *Worker
	Accounts *Accounts
	Statuses *Statuses
	// Usage is the database with usage_events, where the calls prepaid packs covered in earlier
	// months and the times of this month's calls are read (only for services with packs).
	Usage   driver.Conn
	Billing settle.Config
	Now     func() time.Time
}

// Handler routes GET /v1/accounts/{account}/usage?period=YYYY-MM and
// GET /v1/accounts/{account}/status.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/accounts/{account}/usage", a.usage)
	mux.HandleFunc("GET /v1/accounts/{account}/status", a.status)
	return mux
}

func (a *API) usage(w http.ResponseWriter, r *http.Request) {
	account := r.PathValue("account")
	if err := contract.ValidateAccount(account); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := contract.PeriodOf(a.Now(), a.Billing.Location)
	if q := r.URL.Query().Get("period"); q != "" {
		var err error
		if p, err = contract.ParsePeriod(q); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if err := a.Accounts.Loaded(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "account terms (activations, packs, contract prices) not loaded yet ("+err.Error()+"); retry shortly")
		return
	}
	totals, ready, closed := a.Worker.AccountUsage(account, p)
	if !ready {
		writeError(w, http.StatusServiceUnavailable, "no usage partitions assigned yet; retry shortly")
		return
	}
	if closed { // no running totals for it any more: the exact recount is the answer
		var err error
		if totals, err = recount(r.Context(), a.Usage, account, p); err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	resp := UsageResponse{Account: account, Period: p.String(), Currency: a.Billing.Catalogue.Currency, Services: []ServiceUsage{}}
	for _, svc := range a.Accounts.Services(account) {
		if _, ok := totals[svc]; !ok {
			totals[svc] = 0 // a service with packs but no calls yet still shows its prepaid calls left
		}
	}
	for svc, calls := range totals {
		u, err := a.serviceUsage(r.Context(), account, svc, p, calls)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		if u.Calls > 0 || u.PrepaidCallsLeft > 0 {
			resp.Services = append(resp.Services, u)
		}
	}
	sort.Slice(resp.Services, func(i, j int) bool { return resp.Services[i].Service < resp.Services[j].Service })
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// serviceUsage prices the running total of (account, service, p) with settle.QuoteUsage. Without
// prepaid packs the total is all it needs; with packs, which calls packs covered depends on when
// every call since the packs' start occurred, read from usage_events per pack window.
func (a *API) serviceUsage(ctx context.Context, account, service string, p contract.Period, running int64) (ServiceUsage, error) {
	loc := a.Billing.Location
	start, end := p.Start(loc), p.End(loc)
	asOf := a.Now()
	if asOf.Before(start) {
		asOf = start
	} else if asOf.After(end) {
		asOf = end
	}
	terms := a.Accounts.Terms(account, service)
	calls := []settle.CallsAt{{At: start, Calls: running}}
	if bounds := settle.PackWindowBounds(terms); len(bounds) > 0 && bounds[0].Before(end) {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stored, err := windowedCalls(qctx, a.Usage, loc, account, service, contract.PeriodOf(bounds[0], loc), p, bounds)
		if err != nil {
			return ServiceUsage{}, err
		}
		fresh := asOf
		if !fresh.Before(end) {
			fresh = end.Add(-time.Nanosecond)
		}
		calls = fitToRunning(stored, p, loc, running, fresh)
	}
	q, err := settle.QuoteUsage(a.Billing, settle.UsageQuoteRequest{Account: account, Service: service, Period: p, Terms: terms, Calls: calls, AsOf: asOf})
	if err != nil {
		return ServiceUsage{}, err
	}
	u := ServiceUsage{Service: service, Calls: q.Line.Calls, Activated: q.Line.Activated, PrepaidCalls: q.Line.PrepaidCalls,
		PrepaidCallsLeft: q.PrepaidCallsLeft, BillableCalls: q.Line.BillableCalls, Tier: q.Line.Tier, UnitPrice: q.Line.UnitPrice, AmountSoFar: q.Line.Amount}
	if u.Activated {
		u.FreeCallsLeft = a.Billing.Catalogue.FreeCallsPerMonth - q.Line.FreeCalls
	}
	return u, nil
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
