package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-billing/tally/aggregate"
	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/apikey"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/problem"
	"github.com/tally-billing/tally/internal/telemetry"
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
	// Keys are who may read what: a key reads the accounts in its scope (a tenant's key, scoped
	// to its accounts; an operator's, unscoped, reads any). Nil or none: loopback clients only.
	Keys *apikey.Keyring
	// Registry, when set, gets tally_query_requests_total.
	Registry prometheus.Registerer

	recounts closedMonths
}

// Handler routes the query API (aggregate/openapi.yaml) and the account page; every route is
// guarded by Keys.
func (a *API) Handler() http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_query_requests_total",
		Help: "Query API requests by route and HTTP status (401/403/429: refused by key, scope or rate limit)."}, []string{"route", "code"})
	if a.Registry != nil {
		a.Registry.MustRegister(requests)
	}
	mux := http.NewServeMux()
	for pattern, route := range map[string]struct {
		name  string
		serve http.HandlerFunc
	}{
		"GET /v1/accounts/{account}/usage":   {"usage", a.usage},
		"GET /v1/accounts/{account}/status":  {"status", a.status},
		"GET /v1/accounts/{account}/terms":   {"terms", a.terms},
		"GET /v1/accounts/{account}/history": {"history", a.history},
		"GET /accounts/{account}":            {"page", a.page},
	} {
		mux.Handle(pattern, a.guard(route.serve, requests.MustCurryWith(prometheus.Labels{"route": route.name})))
	}
	mux.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, _ *http.Request) { // public: it holds no account's data
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(aggregate.OpenAPI)
	})
	return problem.Routed(mux)
}

// guard serves a request whose key may read the path's account: 401 without a known key, 429
// past the key's rate, 403 for an account outside its scope, each as problem details.
func (a *API) guard(serve http.HandlerFunc, requests *prometheus.CounterVec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := telemetry.NewStatusWriter(w)
		defer func() { requests.WithLabelValues(strconv.Itoa(rec.Status)).Inc() }()
		key, refused := a.Keys.Admit(r)
		if refused != nil {
			refused.SetHeaders(w.Header())
			problem.Write(rec, refused.Status, refused.Detail)
			return
		}
		if account := r.PathValue("account"); !key.Accounts.Allows(account) {
			problem.Write(rec, http.StatusForbidden, fmt.Sprintf("the key %q may not read account %q (it is not in the key's accounts=)", key.Name, account))
			return
		}
		serve(rec, r)
	})
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
	resp, err := a.accountUsage(r.Context(), account, p)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// termsLoaded fails while the accounts topic is still being read from its start.
func (a *API) termsLoaded(ctx context.Context) error {
	if err := a.Accounts.Loaded(ctx); err != nil {
		return fmt.Errorf("account terms (activations, packs, contract prices) not loaded yet (%v); retry shortly", err)
	}
	return nil
}

// accountUsage is the usage answer of (account, p); an error means "not now" (503).
func (a *API) accountUsage(ctx context.Context, account string, p contract.Period) (UsageResponse, error) {
	if err := a.termsLoaded(ctx); err != nil {
		return UsageResponse{}, err
	}
	totals, err := a.monthTotals(ctx, account, p)
	if err != nil {
		return UsageResponse{}, err
	}
	resp := UsageResponse{Account: account, Period: p.String(), Currency: a.Billing.Catalogue.Currency, Services: []ServiceUsage{}}
	for _, svc := range a.Accounts.Services(account) {
		if _, ok := totals[svc]; !ok {
			totals[svc] = 0 // a service with packs but no calls yet still shows its prepaid calls left
		}
	}
	for svc, calls := range totals {
		u, err := a.serviceUsage(ctx, account, svc, p, calls)
		if err != nil {
			return UsageResponse{}, err
		}
		if u.Calls > 0 || u.PrepaidCallsLeft > 0 {
			resp.Services = append(resp.Services, u)
		}
	}
	sort.Slice(resp.Services, func(i, j int) bool { return resp.Services[i].Service < resp.Services[j].Service })
	return resp, nil
}

// monthTotals are the account's calls of p by service: the running totals, or the exact recount
// of usage_events for a month no longer open. An error means "not now" (503).
func (a *API) monthTotals(ctx context.Context, account string, p contract.Period) (map[string]int64, error) {
	if a.Worker.Misrouted(account, p) { // partial in every partition: the live exact recount, not a cached one
		return recount(ctx, a.Usage, account, p)
	}
	totals, ready, closed := a.Worker.AccountUsage(account, p)
	if !ready {
		return nil, errors.New("no usage partitions assigned yet; retry shortly")
	}
	if closed { // no running totals for it any more: the exact recount is the answer
		return a.recounts.get(account, p, func() (map[string]int64, error) { return recount(ctx, a.Usage, account, p) })
	}
	return totals, nil
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

// TermsResponse is the body of GET /v1/accounts/{account}/terms: what the accounts topic says
// of the account, service by service, as billing reads it.
type TermsResponse struct {
	Account  string         `json:"account"`
	AsOf     string         `json:"as_of"`
	Services []ServiceTerms `json:"services"`
}

// ServiceTerms are one service's terms. PrepaidCallsLeft is what the packs have left usable this
// month (the usage API's figure).
type ServiceTerms struct {
	Service          string          `json:"service"`
	Activated        bool            `json:"activated"`
	ActivatedAt      string          `json:"activated_at,omitempty"`
	Packs            []PackTerms     `json:"packs"`
	PrepaidCallsLeft int64           `json:"prepaid_calls_left"`
	ContractPrices   []ContractPrice `json:"contract_prices"`
}

// PackTerms is a prepaid pack: State is "upcoming", "valid" or "expired" as of the answer.
type PackTerms struct {
	PackID     string `json:"pack_id"`
	Calls      int64  `json:"calls"`
	ValidFrom  string `json:"valid_from"`
	ValidUntil string `json:"valid_until"`
	State      string `json:"state"`
}

// ContractPrice is a price override: State is "scheduled", "in_effect" (the latest that has
// begun) or "superseded".
type ContractPrice struct {
	EffectiveFrom string              `json:"effective_from"`
	Tiers         []contract.TierData `json:"tiers"`
	State         string              `json:"state"`
}

func (a *API) terms(w http.ResponseWriter, r *http.Request) {
	account := r.PathValue("account")
	if err := contract.ValidateAccount(account); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	resp, err := a.accountTerms(r.Context(), account, a.prepaidLeft(r.Context(), account, contract.PeriodOf(a.Now(), a.Billing.Location)))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// accountTerms is the terms answer of account as of now; left gives what a service's packs have
// left usable this month (asked only for services with packs). An error means "not now" (503).
func (a *API) accountTerms(ctx context.Context, account string, left func(service string) (int64, error)) (TermsResponse, error) {
	if err := a.termsLoaded(ctx); err != nil {
		return TermsResponse{}, err
	}
	now := a.Now()
	monthStart := contract.PeriodOf(now, a.Billing.Location).Start(a.Billing.Location)
	resp := TermsResponse{Account: account, AsOf: cloudevent.FormatTime(now), Services: []ServiceTerms{}}
	for _, svc := range a.Accounts.Services(account) {
		st := termsOf(svc, a.Accounts.Terms(account, svc), now, monthStart)
		if len(st.Packs) > 0 {
			var err error
			if st.PrepaidCallsLeft, err = left(svc); err != nil {
				return TermsResponse{}, err
			}
		}
		resp.Services = append(resp.Services, st)
	}
	sort.Slice(resp.Services, func(i, j int) bool { return resp.Services[i].Service < resp.Services[j].Service })
	return resp, nil
}

// prepaidLeft quotes what a service's packs have left usable in p, as the usage answer does,
// reading the account's month totals once, when first asked.
func (a *API) prepaidLeft(ctx context.Context, account string, p contract.Period) func(service string) (int64, error) {
	var totals map[string]int64
	return func(service string) (int64, error) {
		if totals == nil {
			t, err := a.monthTotals(ctx, account, p)
			if err != nil {
				return 0, err
			}
			totals = t
		}
		u, err := a.serviceUsage(ctx, account, service, p, totals[service])
		return u.PrepaidCallsLeft, err
	}
}

// termsOf lays out a service's terms (in log order, as Accounts.Terms gives them) as of now;
// monthStart is the start of now's month, whose bill takes the contract price in effect then
// (one that begins later in the month applies from the next).
func termsOf(service string, inputs []settle.Input, now, monthStart time.Time) ServiceTerms {
	st := ServiceTerms{Service: service, Packs: []PackTerms{}, ContractPrices: []ContractPrice{}}
	inEffect := -1
	var inEffectFrom time.Time
	for _, in := range inputs {
		switch in := in.(type) {
		case settle.Activation:
			st.Activated, st.ActivatedAt = true, cloudevent.FormatTime(in.At)
		case settle.PackPurchase:
			state := "valid"
			switch {
			case now.Before(in.ValidFrom):
				state = "upcoming"
			case !now.Before(in.ValidUntil):
				state = "expired"
			}
			st.Packs = append(st.Packs, PackTerms{PackID: in.PackID, Calls: in.Calls, ValidFrom: cloudevent.FormatTime(in.ValidFrom),
				ValidUntil: cloudevent.FormatTime(in.ValidUntil), State: state})
		case settle.PriceOverride:
			tiers := make([]contract.TierData, len(in.Tiers))
			for i, t := range in.Tiers {
				tiers[i] = contract.TierData{FromCalls: t.FromCalls, UnitPrice: t.UnitPrice.String()}
			}
			state := "scheduled"
			if !in.EffectiveFrom.After(monthStart) {
				state = "superseded"
				// The engine's choice (overrideFor): the latest start, a later record winning a tie.
				if inEffect < 0 || !in.EffectiveFrom.Before(inEffectFrom) {
					inEffect, inEffectFrom = len(st.ContractPrices), in.EffectiveFrom
				}
			}
			st.ContractPrices = append(st.ContractPrices, ContractPrice{EffectiveFrom: cloudevent.FormatTime(in.EffectiveFrom), Tiers: tiers, State: state})
		}
	}
	if inEffect >= 0 {
		st.ContractPrices[inEffect].State = "in_effect"
	}
	return st
}

// writeError answers status with problem details, as the refusals are.
func writeError(w http.ResponseWriter, status int, msg string) {
	problem.Write(w, status, msg)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
