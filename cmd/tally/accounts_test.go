package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/settle"
)

type capture struct {
	mu      sync.Mutex
	records []ingest.Record
}

func (c *capture) Publish(_ context.Context, r []ingest.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, r...)
	return nil
}

func tally(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &environment{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, lookupEnv: func(string) (string, bool) { return "", false }}
	code := run(context.Background(), env, args)
	return code, out.String(), errOut.String()
}

// tally accounts changes terms through the accounts API: a pack sold twice with the same
// command is one change (the derived id), a change billing would refuse is refused with its
// reason, and show lays out what the query API says.
func TestAccountsCommand(t *testing.T) {
	pub := &capture{}
	at := time.Date(2026, 10, 6, 9, 0, 0, 0, time.UTC) // one instant for every request: the same change must be the same bytes
	api, err := ingest.NewAccountsAPI(ingest.AccountsConfig{PublishTimeout: time.Second}, settle.DefaultCatalogue(), pub, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return at })
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	ingestSrv := httptest.NewServer(mux)
	defer ingestSrv.Close()

	sell := []string{"accounts", "sell-pack", "--ingest-url", ingestSrv.URL, "--account", "initech", "--service", "product-recognition",
		"--calls", "200000", "--from", "2026-10-05T00:00:00+08:00", "--until", "2026-10-20T00:00:00+08:00"}
	for range 2 {
		if code, out, errOut := tally(t, sell...); code != 0 || !strings.Contains(out, "accepted: sell-pack product-recognition for initech") {
			t.Fatalf("sell-pack: %d %s %s", code, out, errOut)
		}
	}
	if len(pub.records) != 2 || !bytes.Equal(pub.records[0].Value, pub.records[1].Value) || !bytes.Contains(pub.records[0].Value, []byte(`"pack_id":"cli-`)) {
		t.Fatalf("the same command twice published %d records: %s", len(pub.records), pub.records)
	}
	code, _, errOut := tally(t, "accounts", "sell-pack", "--ingest-url", ingestSrv.URL, "--account", "globex", "--service", "image-enhancement",
		"--calls", "5", "--from", "2026-10-05T00:00:00+08:00", "--until", "2026-10-20T00:00:00+08:00")
	if code != 1 || !strings.Contains(errOut, `refused (400 Bad Request): service: "image-enhancement" is in free beta and has no prepaid packs`) {
		t.Fatalf("a pack of the free-beta service: %d %s", code, errOut)
	}
	if code, _, errOut := tally(t, "accounts", "set-price", "--ingest-url", ingestSrv.URL, "--account", "umbrella", "--service", "celebrity-recognition",
		"--from", "2026-10-01T00:00:00+08:00", "--tiers", "0:1.0,1000000:0.8"); code != 0 {
		t.Fatalf("set-price: %d %s", code, errOut)
	}

	query := http.NewServeMux()
	query.HandleFunc("GET /v1/accounts/initech/terms", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"account":"initech","as_of":"2026-10-26T09:00:00+08:00","services":[{"service":"product-recognition","activated":true,"activated_at":"2026-10-01T00:00:00+08:00",`+
			`"packs":[{"pack_id":"p1","calls":200000,"valid_from":"2026-10-05T00:00:00+08:00","valid_until":"2026-10-20T00:00:00+08:00","state":"expired"}],"prepaid_calls_left":0,"contract_prices":[]}]}`)
	})
	query.HandleFunc("GET /v1/accounts/initech/usage", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"account":"initech","period":"2026-10","currency":"CNY","services":[{"service":"product-recognition","calls":360000,"activated":true,"free_calls_left":0,`+
			`"prepaid_calls":180000,"prepaid_calls_left":0,"billable_calls":170000,"tier":1,"unit_price":"2.5","amount_so_far":"425.00"}]}`)
	})
	query.HandleFunc("GET /v1/accounts/initech/status", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"account":"initech","status":"active"}`)
	})
	query.HandleFunc("GET /v1/accounts/initech/history", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"account":"initech","bills":[{"bill_id":"bill:initech:2026-09","account":"initech","period":"2026-09","currency":"CNY","total":"-147.30",`+
			`"lines":[{"service":"product-recognition","activated":true,"calls":20000,"free_calls":10000,"prepaid_calls":0,"billable_calls":10000,"tier":1,"unit_price":"2.5","amount":"25.00"}],`+
			`"adjustments":[{"period":"2026-08","service":"product-recognition","calls_before":999001,"calls_after":1001001,"amount":"-172.30"}],"issued_at":"2026-10-01T00:00:00+08:00"}],`+
			`"holds":[{"event_id":"h1","kind":"requested","hold_id":"hold:initech:2026-10","amount":"145.00","for_period":"2026-10","basis_period":"2026-09","at":"2026-10-01T00:00:00+08:00"}],`+
			`"status_changes":[{"status":"suspended","reason":"hold_failed","at":"2026-09-01T02:00:00+08:00"}],"limits":{"bills":3,"holds":6}}`)
	})
	querySrv := httptest.NewServer(query)
	defer querySrv.Close()
	code, out, errOut := tally(t, "accounts", "show", "--query-url", querySrv.URL, "--account", "initech")
	for _, want := range []string{"initech: active", "product-recognition  pack p1", "200000 calls, 2026-10-05T00:00:00+08:00 – 2026-10-20T00:00:00+08:00  expired", "425.00",
		"bill:initech:2026-09", "-147.30 CNY", "20000 calls: 10000 free, 0 prepaid, 10000 billed at tier 1, 2.5 per 1,000",
		"adjustment 2026-08 product-recognition", "-172.30", "999001 → 1001001 calls", "hold:initech:2026-10", "2026-10 (2026-09)", "suspended  hold_failed"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("show (%d, %s) lacks %q:\n%s", code, errOut, want, out)
		}
	}
}
