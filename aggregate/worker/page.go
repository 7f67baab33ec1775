package worker

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"strconv"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
)

// The account page: what an account's owner would look at in a console, server-rendered from
// the same answers as the JSON endpoints (usage, terms, status), one HTML file with its styles
// inline, nothing fetched from elsewhere.
//
//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("account").Parse(pageHTML))

// pageData is what page.html renders.
type pageData struct {
	Account, Period, Currency, AsOf string
	Status                          *AccountStatus
	Services                        []serviceBar
	Total                           string
	Terms                           []ServiceTerms
	History                         History
	HistoryError                    string // why the history could not be read, if it could not
}

// serviceBar is one service's month as a bar: the calls the free pack, prepaid packs and the bill
// took, against the reach tiers' thresholds.
type serviceBar struct {
	ServiceUsage
	FreeUsed                int64
	FreeWidth, PrepaidWidth string // CSS percentages of the bar
	BillableWidth           string
	Marks                   []tierMark
	NextTier                string // what the next tier needs, if any
	ContractPrice           bool
}

type tierMark struct {
	Left  string // CSS percentage
	Label string
	End   bool // near the bar's end: the label goes to the mark's left
}

func (a *API) page(w http.ResponseWriter, r *http.Request) {
	account := r.PathValue("account")
	if err := contract.ValidateAccount(account); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := a.Now()
	loc := a.Billing.Location
	p := contract.PeriodOf(now, loc)
	usage, err := a.accountUsage(r.Context(), account, p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	left := map[string]int64{} // what the usage answer quoted: no second read of the month
	for _, u := range usage.Services {
		left[u.Service] = u.PrepaidCallsLeft
	}
	terms, err := a.accountTerms(r.Context(), account, func(service string) (int64, error) { return left[service], nil })
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	data := pageData{Account: account, Period: usage.Period, Currency: usage.Currency, AsOf: terms.AsOf, Terms: terms.Services}
	// The history is a report beside the month: when it cannot be read the page says why and
	// shows the rest.
	if data.History, err = a.accountHistory(r.Context(), account, HistoryLimits{Bills: 3, Holds: 10}); err != nil {
		data.HistoryError = err.Error()
	}
	if a.Statuses != nil && a.Statuses.Loaded(r.Context()) == nil {
		st := a.Statuses.Get(account)
		data.Status = &st
	}
	contractTiers := map[string][]contract.TierData{}
	for _, st := range terms.Services {
		for _, c := range st.ContractPrices {
			if c.State == "in_effect" {
				contractTiers[st.Service] = c.Tiers
			}
		}
	}
	total := decimal.Zero
	for _, u := range usage.Services {
		if amount, err := decimal.NewFromString(u.AmountSoFar); err == nil {
			total = total.Add(amount)
		}
		thresholds, contractPrice := contractThresholds(contractTiers[u.Service])
		if !contractPrice {
			for _, t := range a.Billing.Catalogue.ListSchedule(u.Service, p.Start(loc)).Tiers {
				thresholds = append(thresholds, t.FromCalls)
			}
		}
		data.Services = append(data.Services, bar(u, thresholds, contractPrice))
	}
	data.Total = total.StringFixed(2)
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, data); err != nil {
		http.Error(w, "rendering the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	_, _ = w.Write(buf.Bytes())
}

func contractThresholds(tiers []contract.TierData) ([]int64, bool) {
	var out []int64
	for _, t := range tiers {
		out = append(out, t.FromCalls)
	}
	return out, len(tiers) > 0
}

// bar lays a service's month out against its tier thresholds (from_calls of each tier): the
// scale reaches the next threshold above the calls, so the bar shows how far the next tier is.
func bar(u ServiceUsage, thresholds []int64, contractPrice bool) serviceBar {
	b := serviceBar{ServiceUsage: u, ContractPrice: contractPrice}
	b.FreeUsed = max(0, u.Calls-u.PrepaidCalls-u.BillableCalls)
	scale := max(u.Calls, 1)
	for _, t := range thresholds {
		if t > u.Calls {
			scale = t
			b.NextTier = fmt.Sprintf("%s calls to the next tier (from %s)", group(t-u.Calls), group(t))
			break
		}
	}
	pct := func(n int64) string { return strconv.FormatFloat(100*float64(n)/float64(scale), 'f', 2, 64) + "%" }
	b.FreeWidth, b.PrepaidWidth, b.BillableWidth = pct(b.FreeUsed), pct(u.PrepaidCalls), pct(u.BillableCalls)
	for i, t := range thresholds {
		if t > 0 && t <= scale {
			b.Marks = append(b.Marks, tierMark{Left: pct(t), Label: fmt.Sprintf("tier %d from %s", i+1, group(t)), End: 10*t > 8*scale})
		}
	}
	return b
}

// group writes n with thousands separators: 1,000,000.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
