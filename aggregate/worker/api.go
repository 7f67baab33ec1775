package worker

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/settle"
)

// ServiceUsage is one service's running month in the usage API.
type ServiceUsage struct {
	Service       string `json:"service"`
	Calls         int64  `json:"calls"`
	Activated     bool   `json:"activated"`
	FreeCallsLeft int64  `json:"free_calls_left"`
	Tier          int    `json:"tier"`
	UnitPrice     string `json:"unit_price"`
	AmountSoFar   string `json:"amount_so_far"`
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
	Billing  settle.Config
	Now      func() time.Time
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
	if err := ingest.ValidateAccount(account); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := settle.PeriodOf(a.Now(), a.Billing.Location)
	if q := r.URL.Query().Get("period"); q != "" {
		var err error
		if p, err = settle.ParsePeriod(q); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	totals, ready := a.Worker.AccountUsage(account, p)
	if !ready {
		writeError(w, http.StatusServiceUnavailable, "no usage partitions assigned yet; retry shortly")
		return
	}
	resp := UsageResponse{Account: account, Period: p.String(), Currency: a.Billing.Catalogue.Currency, Services: []ServiceUsage{}}
	for svc, calls := range totals {
		activated, contract := a.Accounts.Terms(account, svc, p, a.Billing.Location)
		q, err := settle.QuoteMonth(a.Billing, settle.QuoteRequest{Service: svc, Period: p, Calls: calls, Activated: activated, Contract: contract})
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		left := int64(0)
		if activated {
			left = max(0, a.Billing.Catalogue.FreeCallsPerMonth-calls)
		}
		resp.Services = append(resp.Services, ServiceUsage{Service: svc, Calls: calls, Activated: activated, FreeCallsLeft: left,
			Tier: q.Line.Tier, UnitPrice: q.Line.UnitPrice, AmountSoFar: q.Line.Amount})
	}
	sort.Slice(resp.Services, func(i, j int) bool { return resp.Services[i].Service < resp.Services[j].Service })
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
