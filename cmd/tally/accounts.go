package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	aggworker "github.com/tally-billing/tally/aggregate/worker"
	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/internal/problem"
	"github.com/tally-billing/tally/internal/tlsfiles"
)

func init() {
	register("accounts", command{
		summary: "the console for operators: activate, sell a pack, set contract prices, show an account",
		run:     runAccounts,
	})
}

const accountsUsage = `usage: tally accounts <verb> --account A [flags]

  activate   --service S [--at RFC3339]                         activate a service
  sell-pack  --service S --calls N --from T --until T [--pack-id P]  sell a prepaid pack
  set-price  --service S --from T --tiers 0:1.8,1000000:1.2      contract prices from T on
  show       [--period YYYY-MM]                                  terms, usage and status

Changes go through the accounts API of tally ingest (--ingest-url, --api-key: a key with
;console); show reads the query API of tally aggregate (--query-url, --query-key). Each change carries an
id (--id; by default one derived from the change itself, so running the same command again
changes nothing). --json prints the API's answers as they are.`

func runAccounts(ctx context.Context, env *environment, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(env.stderr, accountsUsage)
		return exitError{code: 2}
	}
	verb := args[0]
	fs := flag.NewFlagSet("accounts "+verb, flag.ContinueOnError)
	account := fs.String("account", "", "the account")
	service := fs.String("service", "", "the service (tally price --list)")
	id := fs.String("id", "", "the change's id (default: derived from the change)")
	at := fs.String("at", "", "activate: when it takes effect (default now)")
	calls := fs.Int64("calls", 0, "sell-pack: calls in the pack")
	from := fs.String("from", "", "sell-pack: valid from; set-price: effective from (RFC 3339)")
	until := fs.String("until", "", "sell-pack: valid until, exclusive (RFC 3339)")
	packID := fs.String("pack-id", "", "sell-pack: the pack's id (default: the change's id)")
	tiers := fs.String("tiers", "", "set-price: FROM_CALLS:UNIT_PRICE,… per 1,000 calls, the first from 0")
	period := fs.String("period", "", "show: billing month YYYY-MM (default the current one)")
	ingestURL := fs.String("ingest-url", "http://127.0.0.1:8080", "base URL of tally ingest (the accounts API)")
	queryURL := fs.String("query-url", "http://127.0.0.1:8081", "base URL of tally aggregate (the query API)")
	apiKey := fs.String("api-key", "", "bearer key for the accounts API (a key with ;console): @FILE, or set TALLY_API_KEY (a key on the command line is refused)")
	queryKey := fs.String("query-key", "", "show: bearer key for the query API (one of tally aggregate's --query-keys; default --api-key): @FILE, or set TALLY_QUERY_KEY")
	asJSON := fs.Bool("json", false, "print the APIs' JSON answers")
	caFile := fs.String("tls-ca", "", "PEM CAs to trust for https:// URLs (default: the system's)")
	clientCert := fs.String("tls-client-cert", "", "PEM client certificate, for APIs that require one (--tls-client-ca on the role)")
	clientKey := fs.String("tls-client-key", "", "PEM private key of --tls-client-cert")
	if err := env.parse(fs, args[1:]); err != nil {
		return err
	}
	if *account == "" {
		return errors.New("--account is required")
	}
	for _, key := range []*string{apiKey, queryKey} {
		v, err := secretValue(*key)
		if err != nil {
			return fmt.Errorf("--api-key / --query-key: %w", err)
		}
		*key = v
	}
	tlsConfig, err := tlsfiles.Client{CAFile: *caFile, CertFile: *clientCert, KeyFile: *clientKey}.Config()
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: http.ProxyFromEnvironment}}
	var kind string
	body := map[string]any{}
	switch verb {
	case "activate":
		kind, body["service"] = "activations", *service
		if *at != "" {
			body["at"] = *at
		}
	case "sell-pack":
		kind = "packs"
		body["service"], body["calls"], body["valid_from"], body["valid_until"] = *service, *calls, *from, *until
	case "set-price":
		kind = "price-overrides"
		t, err := parseTierFlag(*tiers)
		if err != nil {
			return err
		}
		body["service"], body["effective_from"], body["tiers"] = *service, *from, t
	case "show":
		if *queryKey == "" {
			*queryKey = *apiKey
		}
		return showAccount(ctx, env.stdout, client, *queryURL, *queryKey, *account, *period, *asJSON)
	default:
		fmt.Fprintln(env.stderr, accountsUsage)
		return exitError{code: 2}
	}
	if *id == "" {
		*id = derivedID(kind, *account, body)
	}
	body["id"] = *id
	if kind == "packs" {
		body["pack_id"] = *packID
		if *packID == "" {
			body["pack_id"] = *id
		}
	}
	answer, err := postChange(ctx, client, *ingestURL, *apiKey, *account, kind, body)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := env.stdout.Write(answer)
		return err
	}
	var a ingest.Accepted
	_ = json.Unmarshal(answer, &a)
	fmt.Fprintf(env.stdout, "accepted: %s %s for %s at %s (id %s)\n", verb, *service, a.Account, a.Time, a.ID)
	return nil
}

// derivedID names a change by what it says: the same command run twice is the same change.
func derivedID(kind, account string, body map[string]any) string {
	raw, _ := json.Marshal(body) // map keys sorted: the same body, the same bytes
	sum := sha256.Sum256([]byte(kind + "\x00" + account + "\x00" + string(raw)))
	return "cli-" + hex.EncodeToString(sum[:8])
}

// parseTierFlag reads "0:1.8,1000000:1.2" into the API's tiers.
func parseTierFlag(spec string) ([]map[string]any, error) {
	if spec == "" {
		return nil, errors.New("--tiers is required: FROM_CALLS:UNIT_PRICE,… such as 0:1.8,1000000:1.2")
	}
	var tiers []map[string]any
	for _, part := range strings.Split(spec, ",") {
		fromCalls, price, ok := strings.Cut(strings.TrimSpace(part), ":")
		n, err := strconv.ParseInt(fromCalls, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("--tiers: %q is not FROM_CALLS:UNIT_PRICE", part)
		}
		tiers = append(tiers, map[string]any{"from_calls": n, "unit_price": price})
	}
	return tiers, nil
}

func postChange(ctx context.Context, client *http.Client, base, key, account, kind string, body map[string]any) ([]byte, error) {
	raw, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/v1/accounts/"+account+"/"+kind, bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the accounts API (%s): %w", base, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		var p problem.Details
		if json.Unmarshal(answer, &p) == nil && p.Detail != "" {
			return nil, fmt.Errorf("refused (%d %s): %s", resp.StatusCode, p.Title, p.Detail)
		}
		return nil, fmt.Errorf("the accounts API answered %d: %s", resp.StatusCode, bytes.TrimSpace(answer))
	}
	return answer, nil
}

// getJSON reads one answer of the query API into v, and returns its bytes.
func getJSON(ctx context.Context, client *http.Client, url, key string, v any) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the query API: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %d: %s", url, resp.StatusCode, bytes.TrimSpace(raw))
	}
	return raw, json.Unmarshal(raw, v)
}

// showAccount prints an account's terms, its usage of the month and its status.
func showAccount(ctx context.Context, out io.Writer, client *http.Client, base, key, account, period string, asJSON bool) error {
	base = strings.TrimSuffix(base, "/") + "/v1/accounts/" + account
	var terms aggworker.TermsResponse
	var usage aggworker.UsageResponse
	var status map[string]string
	rawTerms, err := getJSON(ctx, client, base+"/terms", key, &terms)
	if err != nil {
		return err
	}
	usageURL := base + "/usage"
	if period != "" {
		usageURL += "?period=" + period
	}
	rawUsage, err := getJSON(ctx, client, usageURL, key, &usage)
	if err != nil {
		return err
	}
	rawStatus, err := getJSON(ctx, client, base+"/status", key, &status)
	if err != nil {
		return err
	}
	// The history comes from the billsink's tables; without them the rest still shows.
	var history aggworker.History
	rawHistory, historyErr := getJSON(ctx, client, base+"/history?bills=3&holds=6", key, &history)
	if asJSON {
		if historyErr != nil {
			rawHistory = []byte("null")
		}
		_, err := fmt.Fprintf(out, `{"terms":%s,"usage":%s,"status":%s,"history":%s}`+"\n", bytes.TrimSpace(rawTerms), bytes.TrimSpace(rawUsage), bytes.TrimSpace(rawStatus), bytes.TrimSpace(rawHistory))
		return err
	}
	fmt.Fprintf(out, "%s: %s", account, status["status"])
	if status["reason"] != "" {
		fmt.Fprintf(out, " (%s since %s)", status["reason"], status["since"])
	}
	fmt.Fprintf(out, "\n\nTerms as of %s\n", terms.AsOf)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "service\tterm\tdetail\tstate")
	for _, s := range terms.Services {
		if s.Activated {
			fmt.Fprintf(w, "%s\tactivated\tsince %s\t\n", s.Service, s.ActivatedAt)
		}
		for _, p := range s.Packs {
			fmt.Fprintf(w, "%s\tpack %s\t%d calls, %s – %s\t%s\n", s.Service, p.PackID, p.Calls, p.ValidFrom, p.ValidUntil, p.State)
		}
		if len(s.Packs) > 0 {
			fmt.Fprintf(w, "%s\tprepaid left\t%d calls usable this month\t\n", s.Service, s.PrepaidCallsLeft)
		}
		for _, c := range s.ContractPrices {
			var tiers []string
			for _, t := range c.Tiers {
				tiers = append(tiers, fmt.Sprintf("≥%d: %s", t.FromCalls, t.UnitPrice))
			}
			fmt.Fprintf(w, "%s\tcontract price\tfrom %s: %s\t%s\n", s.Service, c.EffectiveFrom, strings.Join(tiers, "  "), c.State)
		}
	}
	_ = w.Flush()
	fmt.Fprintf(out, "\nUsage of %s (%s)\n", usage.Period, usage.Currency)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "service\tcalls\tfree left\tprepaid\tprepaid left\ttier\tunit\tamount so far\t")
	for _, s := range usage.Services {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", s.Service, s.Calls, s.FreeCallsLeft, s.PrepaidCalls, s.PrepaidCallsLeft, s.Tier, s.UnitPrice, s.AmountSoFar)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if historyErr != nil {
		_, err := fmt.Fprintf(out, "\nHistory: not available (%v)\n", historyErr)
		return err
	}
	return printHistory(out, history)
}

// printHistory lays out the last bills (with lines and adjustments), holds and status changes.
func printHistory(out io.Writer, h aggworker.History) error {
	fmt.Fprintf(out, "\nLast bills\n")
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "period\tbill\ttotal\tissued")
	for _, b := range h.Bills {
		fmt.Fprintf(w, "%s\t%s\t%s %s\t%s\n", b.Period, b.BillID, b.Total, b.Currency, b.IssuedAt)
		for _, l := range b.Lines {
			fmt.Fprintf(w, "\t  %s\t%s\t%d calls: %d free, %d prepaid, %d billed at tier %d, %s per 1,000\n", l.Service, l.Amount, l.Calls, l.FreeCalls, l.PrepaidCalls, l.BillableCalls, l.Tier, l.UnitPrice)
		}
		for _, a := range b.Adjustments {
			fmt.Fprintf(w, "\t  adjustment %s %s\t%s\t%d → %d calls\n", a.Period, a.Service, a.Amount, a.CallsBefore, a.CallsAfter)
		}
	}
	if len(h.Bills) == 0 {
		fmt.Fprintln(w, "(none yet)\t\t\t")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nHolds\n")
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "at\tkind\thold\tamount\tfor (estimated from)")
	for _, x := range h.Holds {
		basis := ""
		if x.ForPeriod != "" {
			basis = fmt.Sprintf("%s (%s)", x.ForPeriod, x.BasisPeriod)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", x.At, x.Kind, x.HoldID, x.Amount, basis)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nStatus changes\n")
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "at\tstatus\treason")
	for _, c := range h.StatusChanges {
		fmt.Fprintf(w, "%s\t%s\t%s\n", c.At, c.Status, c.Reason)
	}
	return w.Flush()
}
