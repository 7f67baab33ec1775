package ingest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/problem"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
)

func newAccountsAPI(t testing.TB, pub ingest.Publisher, entries ...string) http.Handler {
	t.Helper()
	api, err := ingest.NewAccountsAPI(ingest.AccountsConfig{Keys: keyring(t, entries...), PublishTimeout: time.Second}, settle.DefaultCatalogue(), pub,
		slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	return mux
}

// change posts a body to /v1/accounts/{account}/{kind}; the answer's status and, for a
// refusal, its problem detail.
func change(h http.Handler, account, kind, body string, header ...string) (int, string) {
	req := httptest.NewRequest(http.MethodPost, "/v1/accounts/"+account+"/"+kind, strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:5555"
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var p problem.Details
	if rec.Code >= 400 {
		if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
			return rec.Code, "content type " + ct
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &p)
	}
	return rec.Code, p.Detail
}

// stampAsTheWorker adds recordedat to a record the way the settle worker journals the accounts
// topic: the record's JSON members kept, recordedat set.
func stampAsTheWorker(t *testing.T, value []byte, at time.Time) []byte {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(value, &obj); err != nil {
		t.Fatalf("the published record is no JSON object: %v", err)
	}
	obj["recordedat"], _ = json.Marshal(cloudevent.FormatTime(at))
	line, _ := json.Marshal(obj)
	return line
}

// billingReads runs one line through a replayer, the settle worker's billing core; the reason it
// refuses the line, or "".
func billingReads(t *testing.T, line []byte) string {
	rep, err := settle.NewReplayer(settle.Config{Catalogue: settle.DefaultCatalogue(), Location: time.UTC, HoldRatio: decimal.NewFromInt(1)}, settle.ReplayOptions{},
		func(cloudevent.Out) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var rej *settle.Rejection
	switch err := rep.Line(line); {
	case err == nil:
		return ""
	case errorsAs(err, &rej):
		return rej.Reason
	default:
		t.Fatalf("replay: %v", err)
		return ""
	}
}

func errorsAs(err error, target **settle.Rejection) bool {
	r, ok := err.(*settle.Rejection)
	*target = r
	return ok
}

// randomChange draws a request body of a kind from values billing accepts and values it refuses.
func randomChange(r *rand.Rand, kind string) string {
	pick := func(options ...string) string { return options[r.IntN(len(options))] }
	fields := []string{fmt.Sprintf(`"id":"c-%d"`, r.IntN(1000))}
	add := func(name string, options ...string) {
		if v := pick(options...); v != "-" { // "-": the field left out
			fields = append(fields, fmt.Sprintf(`%q:%s`, name, v))
		}
	}
	add("service", `"image-tagging"`, `"smart-cropping"`, `"image-enhancement"`, `"no-such-service"`, `""`, `7`, "-")
	switch kind {
	case "activations":
		add("at", `"2026-10-01T00:00:00Z"`, `"2026-10-05T11:00:00+08:00"`, "-")
	case "packs":
		add("pack_id", `"p-1"`, `""`, "-")
		add("calls", `1000000`, `1`, `0`, `-5`, `3.5`, `"100"`, `1e3`, "-")
		add("valid_from", `"2026-10-01T00:00:00+08:00"`, `"2026-11-01T00:00:00+08:00"`, `"yesterday"`, "-")
		add("valid_until", `"2026-11-01T00:00:00+08:00"`, `"2027-10-01T00:00:00+08:00"`, `"2026-10-01T00:00:00+08:00"`, "-")
	case "price-overrides":
		add("effective_from", `"2026-10-01T00:00:00+08:00"`, `"October"`, "-")
		add("tiers", `[{"from_calls":0,"unit_price":"1.8"}]`, `[{"from_calls":0,"unit_price":"1.8"},{"from_calls":1000000,"unit_price":"1.2"}]`,
			`[{"from_calls":5,"unit_price":"1.8"}]`, `[{"from_calls":0,"unit_price":"-1"}]`, `[{"from_calls":0,"unit_price":"abc"}]`, `[]`, "-")
	}
	if r.IntN(10) == 0 {
		fields = append(fields, `"colour":"blue"`)
	}
	r.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
	return "{" + strings.Join(fields, ",") + "}"
}

// The console API and billing agree: every change the API publishes, billing applies as the
// settle worker journals it; every change it refuses, billing would refuse for the same reason
// (the event built here independently of the API: the body's fields as data, beside the
// account, at the request's time).
func TestAccountsAPIAcceptsExactlyWhatBillingApplies(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 17))
	types := map[string]string{"activations": contract.ActivatedType, "packs": contract.PackPurchasedType, "price-overrides": contract.PriceOverrideType}
	seen := map[string]int{}
	for i := range 3000 {
		kind := []string{"activations", "packs", "price-overrides"}[i%3]
		body := randomChange(r, kind)
		pub := &memPublisher{}
		code, detail := change(newAccountsAPI(t, pub), "acme", kind, body)

		var fields map[string]json.RawMessage
		if err := json.Unmarshal([]byte(body), &fields); err != nil {
			t.Fatal(err)
		}
		var id string
		_ = json.Unmarshal(fields["id"], &id)
		delete(fields, "id")
		at := cloudevent.FormatTime(clock)
		if raw, ok := fields["at"]; ok {
			_ = json.Unmarshal(raw, &at)
			delete(fields, "at")
		}
		fields["account"] = json.RawMessage(`"acme"`)
		data, _ := json.Marshal(fields)
		event := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"console","type":%q,"time":%q,"recordedat":%q,"data":%s}`,
			id, types[kind], at, cloudevent.FormatTime(clock), data)
		want := billingReads(t, []byte(event))

		switch {
		case code == http.StatusCreated:
			seen["accepted"]++
			if want != "" {
				t.Fatalf("%s %s: accepted, but billing refuses it: %s", kind, body, want)
			}
			if len(pub.records) != 1 || string(pub.records[0].Key) != "acme" {
				t.Fatalf("%s %s: accepted with %d records published", kind, body, len(pub.records))
			}
			if got := billingReads(t, stampAsTheWorker(t, pub.records[0].Value, clock.Add(time.Second))); got != "" {
				t.Fatalf("%s %s: the published record %s is refused by billing: %s", kind, body, pub.records[0].Value, got)
			}
		case code == http.StatusBadRequest:
			seen["refused"]++
			if want == "" {
				t.Fatalf("%s %s: refused (%s), but billing applies it", kind, body, detail)
			}
			if wantDetail := strings.ReplaceAll(want, "data.", ""); detail != wantDetail {
				t.Fatalf("%s %s: refused with %q; billing's reason is %q", kind, body, detail, wantDetail)
			}
			if len(pub.records) != 0 {
				t.Fatalf("%s %s: refused, yet published", kind, body)
			}
		default:
			t.Fatalf("%s %s: answered %d %s", kind, body, code, detail)
		}
	}
	if seen["accepted"] < 100 || seen["refused"] < 100 {
		t.Fatalf("the random changes were too one-sided to test anything: %v", seen)
	}
}

// Who may change terms: a console key for the accounts in its scope; a gateway's key may not;
// no key or a wrong one gets 401; a bad account in the path 400.
func TestAccountsAPIKeysAndScopes(t *testing.T) {
	pub := &memPublisher{}
	reg := prometheus.NewRegistry()
	api, err := ingest.NewAccountsAPI(ingest.AccountsConfig{Keys: keyring(t, "console=console-key-0123456789;console;accounts=acme|shop-*", "gw=gateway-key-0123456789"),
		PublishTimeout: time.Second, Registry: reg}, settle.DefaultCatalogue(), pub, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	h := http.NewServeMux()
	api.Register(h)
	body := `{"id":"a-1","service":"image-tagging"}`
	cases := []struct {
		account, key string
		code         int
	}{
		{"acme", "console-key-0123456789", http.StatusCreated},
		{"shop-7", "console-key-0123456789", http.StatusCreated},
		{"globex", "console-key-0123456789", http.StatusForbidden},
		{"acme", "gateway-key-0123456789", http.StatusForbidden},
		{"acme", "", http.StatusUnauthorized},
		{"acme", "wrong-key-0123456789", http.StatusUnauthorized},
		{"a%20b", "console-key-0123456789", http.StatusBadRequest},
	}
	for _, c := range cases {
		var hdr []string
		if c.key != "" {
			hdr = []string{"Authorization", "Bearer " + c.key}
		}
		if code, detail := change(h, c.account, "activations", body, hdr...); code != c.code {
			t.Errorf("account %s, key %q: %d (%s); want %d", c.account, c.key, code, detail, c.code)
		}
	}
	if len(pub.records) != 2 {
		t.Errorf("%d records published; want the 2 allowed", len(pub.records))
	}
	if code, detail := change(h, "acme", "activations", `{"service":"image-tagging"}`, "Authorization", "Bearer console-key-0123456789"); code != http.StatusBadRequest || !strings.Contains(detail, "id is missing") {
		t.Errorf("no id: %d %s", code, detail)
	}
	if code, detail := change(h, "acme", "packs", `{"id":"p","account":"globex"}`, "Authorization", "Bearer console-key-0123456789"); code != http.StatusBadRequest || !strings.Contains(detail, "path") {
		t.Errorf("an account in the body: %d %s", code, detail)
	}
	// Every answer is counted by kind and status.
	got := testinfra.Samples(t, reg)
	want := map[string]float64{
		"tally_accounts_api_requests_total{kind=activations,status=201}": 2, "tally_accounts_api_requests_total{kind=activations,status=403}": 2,
		"tally_accounts_api_requests_total{kind=activations,status=401}": 2, "tally_accounts_api_requests_total{kind=activations,status=400}": 2,
		"tally_accounts_api_requests_total{kind=packs,status=400}": 1,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("metrics %v; want %v", got, want)
	}
}

// A pack sold through the API is applied by the next bill: the published events, journaled as
// the settle worker journals them, replay to a bill that draws the month's calls from the pack.
func TestAPackSoldThroughTheAPIIsOnTheNextBill(t *testing.T) {
	pub := &memPublisher{}
	h := newAccountsAPI(t, pub)
	if code, detail := change(h, "acme", "activations", `{"id":"act-1","service":"image-tagging","at":"2026-10-01T00:00:00Z"}`); code != http.StatusCreated {
		t.Fatalf("activation: %d %s", code, detail)
	}
	if code, detail := change(h, "acme", "packs", `{"id":"pack-1","pack_id":"pack-1","service":"image-tagging","calls":50000,"valid_from":"2026-10-01T00:00:00Z","valid_until":"2027-10-01T00:00:00Z"}`); code != http.StatusCreated {
		t.Fatalf("pack: %d %s", code, detail)
	}
	var bills []contract.Bill
	rep, err := settle.NewReplayer(settle.Config{Catalogue: settle.DefaultCatalogue(), Location: time.UTC, HoldRatio: decimal.NewFromInt(1)}, settle.ReplayOptions{},
		func(o cloudevent.Out) error {
			if b, ok := o.Data.(contract.Bill); ok {
				bills = append(bills, b)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range pub.records {
		if err := rep.Line(stampAsTheWorker(t, rec.Value, clock)); err != nil {
			t.Fatal(err)
		}
	}
	usage := contract.MustEncode(contract.Event{ID: "u-1", Source: "gw", Type: contract.UsageType, Time: clock.Add(time.Hour), RecordedAt: clock.Add(time.Hour),
		Data: contract.UsageData{Account: "acme", Service: "image-tagging", Calls: 30000}})
	if err := rep.Line(usage); err != nil {
		t.Fatal(err)
	}
	if err := rep.Advance(time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if len(bills) != 1 || len(bills[0].Lines) != 1 {
		t.Fatalf("bills %+v; want October's, one line", bills)
	}
	if l := bills[0].Lines[0]; l.Calls != 30000 || l.FreeCalls != 10000 || l.PrepaidCalls != 20000 || l.BillableCalls != 0 || bills[0].Total != "0.00" {
		t.Fatalf("October's line %+v, total %s; want 10,000 free and 20,000 from the pack, nothing to pay", l, bills[0].Total)
	}
}

// With CheckReusedIDs, an id already on the accounts topic for another change is refused (409),
// while a retry of the same request (even one whose time defaulted to another now) goes through;
// until the topic has been read the API answers 503; an event not made by the API (no request
// digest) cannot be compared and does not block its id.
func TestAReusedIDIsRefused(t *testing.T) {
	pub := &memPublisher{}
	now := clock
	api, err := ingest.NewAccountsAPI(ingest.AccountsConfig{PublishTimeout: time.Second, CheckReusedIDs: true}, settle.DefaultCatalogue(), pub,
		slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	pack := `{"id":"sale-1","pack_id":"p-1","service":"image-tagging","calls":500000,"valid_from":"2026-10-01T00:00:00+08:00","valid_until":"2027-10-01T00:00:00+08:00"}`
	if code, detail := change(mux, "acme", "packs", pack); code != http.StatusServiceUnavailable || !strings.Contains(detail, "still being read") {
		t.Fatalf("before the topic is read: %d %s", code, detail)
	}
	api.Observe([]byte(`{"specversion":"1.0","id":"by-hand","source":"ops","type":"tally.service.activated.v1","time":"2026-10-01T00:00:00Z","data":{"account":"acme","service":"image-tagging"}}`))
	api.Observe(pub0(t, `{"id":"old-1","service":"smart-cropping"}`)) // published earlier, by another instance
	api.CaughtUp()

	if code, detail := change(mux, "acme", "packs", pack); code != http.StatusCreated {
		t.Fatalf("a new id: %d %s", code, detail)
	}
	if code, detail := change(mux, "acme", "packs", strings.Replace(pack, `"calls":500000,`, `  "calls" : 500000 ,`, 1)); code != http.StatusCreated {
		t.Fatalf("a retry (the same fields, other spacing): %d %s", code, detail)
	}
	if code, detail := change(mux, "acme", "packs", strings.Replace(pack, "500000", "900000", 1)); code != http.StatusConflict || !strings.Contains(detail, `id "sale-1" was used for another change`) {
		t.Fatalf("the id of a pack of 500,000 calls for one of 900,000: %d %s", code, detail)
	}
	if code, _ := change(mux, "globex", "packs", pack); code != http.StatusConflict {
		t.Fatalf("the same id for another account: %d", code)
	}
	activate := `{"id":"act-1","service":"image-tagging"}`
	if code, _ := change(mux, "acme", "activations", activate); code != http.StatusCreated {
		t.Fatal("an activation")
	}
	now = now.Add(time.Hour) // its time defaults to now: a retry an hour later is still the same request
	if code, detail := change(mux, "acme", "activations", activate); code != http.StatusCreated {
		t.Fatalf("the activation retried an hour later: %d %s", code, detail)
	}
	if code, _ := change(mux, "acme", "activations", `{"id":"old-1","service":"image-tagging"}`); code != http.StatusConflict {
		t.Fatal("an id another instance published for another change was taken")
	}
	if code, detail := change(mux, "acme", "activations", `{"id":"by-hand","service":"smart-cropping"}`); code != http.StatusCreated {
		t.Fatalf("an id on the topic without a request digest: %d %s", code, detail)
	}
	if len(pub.records) != 5 {
		t.Fatalf("%d records published; want the pack twice, the activation twice and by-hand once", len(pub.records))
	}
}

// pub0 is the record the accounts API publishes for an activation of acme.
func pub0(t *testing.T, body string) []byte {
	t.Helper()
	pub := &memPublisher{}
	if code, detail := change(newAccountsAPI(t, pub), "acme", "activations", body); code != http.StatusCreated {
		t.Fatalf("%d %s", code, detail)
	}
	return pub.records[0].Value
}
