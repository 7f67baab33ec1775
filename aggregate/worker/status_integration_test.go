package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/aggregate"
	"github.com/tally-billing/tally/aggregate/worker"
	"github.com/tally-billing/tally/internal/apikey"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/problem"
	"github.com/tally-billing/tally/internal/testinfra"
)

// GET /v1/accounts/{a}/status follows the account-status topic: the latest event per account.
func TestStatusAPIFollowsTheStatusTopic(t *testing.T) {
	brokers, topic := testinfra.Topic(t, 1, map[string]string{"cleanup.policy": "compact"})
	testinfra.Produce(t, brokers, topic, []kafka.Message{
		{Key: []byte("a"), Value: []byte(`{"id":"1","type":"tally.account.suspended.v1","time":"2026-09-01T02:00:00+08:00","data":{"account":"a","reason":"hold_failed"}}`)},
		{Key: []byte("b"), Value: []byte(`{"id":"2","type":"tally.account.suspended.v1","time":"2026-09-01T02:00:00+08:00","data":{"account":"b","reason":"hold_failed"}}`)},
		{Key: []byte("b"), Value: []byte(`{"id":"3","type":"tally.account.resumed.v1","time":"2026-09-05T02:00:00+08:00","data":{"account":"b","reason":"hold_placed"}}`)},
	})
	s := worker.NewStatuses(kafkax.Plaintext(brokers), topic, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	api := (&worker.API{Statuses: s}).Handler()
	get := func(account string) worker.AccountStatus {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, loopbackGet("/v1/accounts/"+account+"/status"))
		var st worker.AccountStatus
		_ = json.Unmarshal(rec.Body.Bytes(), &st)
		return st
	}
	deadline := time.Now().Add(20 * time.Second)
	for get("b").Reason != "hold_placed" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if a := get("a"); a.Status != "suspended" || a.Reason != "hold_failed" {
		t.Fatalf("a: %+v", a)
	}
	if b := get("b"); b.Status != "active" || b.Reason != "hold_placed" || b.Since != "2026-09-05T02:00:00+08:00" {
		t.Fatalf("b: %+v", b)
	}
	if c := get("c"); c.Status != "active" {
		t.Fatalf("unknown account: %+v", c)
	}

	// With keys: a tenant reads its own accounts and no other, an operator any; no key or an
	// unknown one is 401 (with the challenges a browser answers), a spent budget 429.
	keys, err := apikey.Load("tenant-a=tenant-a-key-0123456789;accounts=a;rate=3,ops=ops-key-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	ring, err := apikey.NewKeyring(keys, apikey.Options{Now: func() time.Time { return stopped }}) // budgets never refill
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	keyed := (&worker.API{Statuses: s, Keys: ring, Registry: reg}).Handler()
	ask := func(account, key string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := loopbackGet("/v1/accounts/" + account + "/status")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		keyed.ServeHTTP(rec, req)
		conforms(t, req, rec)
		return rec
	}
	if rec := ask("a", "tenant-a-key-0123456789"); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"suspended"`) {
		t.Fatalf("the tenant's own account: %d %s", rec.Code, rec.Body)
	}
	refused := func(rec *httptest.ResponseRecorder, status int, detail string) {
		t.Helper()
		var p problem.Details
		if rec.Code != status || rec.Header().Get("Content-Type") != problem.ContentType || json.Unmarshal(rec.Body.Bytes(), &p) != nil || !strings.Contains(p.Detail, detail) {
			t.Fatalf("want %d with %q: %d %s %s", status, detail, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
	}
	refused(ask("b", "tenant-a-key-0123456789"), http.StatusForbidden, `may not read account "b"`)
	noKey := ask("a", "") // loopback, but keys are configured: loopback is no longer a key
	refused(noKey, http.StatusUnauthorized, "missing or unknown API key")
	if got := noKey.Header().Values("WWW-Authenticate"); len(got) != 2 || !strings.HasPrefix(got[1], "Basic") {
		t.Fatalf("challenges: %q", got)
	}
	refused(ask("a", "tenant-b-key-0123456789"), http.StatusUnauthorized, "missing or unknown API key")
	for _, account := range []string{"a", "b", "c"} {
		if rec := ask(account, "ops-key-0123456789"); rec.Code != http.StatusOK {
			t.Fatalf("the operator reading %s: %d %s", account, rec.Code, rec.Body)
		}
	}
	// The tenant's burst is 3 and it has spent 2 (one answered, one forbidden): one more goes
	// through, then 429 with when to retry.
	if rec := ask("a", "tenant-a-key-0123456789"); rec.Code != http.StatusOK {
		t.Fatalf("the third request of a burst of 3: %d %s", rec.Code, rec.Body)
	}
	spent := ask("a", "tenant-a-key-0123456789")
	refused(spent, http.StatusTooManyRequests, `"tenant-a" has spent its 3 requests a second`)
	if spent.Header().Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", spent.Header().Get("Retry-After"))
	}
	for _, path := range []string{"/openapi.yaml", "/v1/accounts/a/nothing"} { // the description without a key; no route: problem details
		rec := httptest.NewRecorder()
		keyed.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if path == "/openapi.yaml" {
			conforms(t, httptest.NewRequest(http.MethodGet, path, nil), rec)
		} else if rec.Code != http.StatusNotFound || rec.Header().Get("Content-Type") != problem.ContentType {
			t.Errorf("GET %s: %d %s", path, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
	if got := testinfra.Samples(t, reg); got["tally_query_requests_total{code=403,route=status}"] != 1 || got["tally_query_requests_total{code=401,route=status}"] != 2 {
		t.Fatalf("requests counted: %v", got)
	}
}

// loopbackGet is a GET as a client on this machine sends it (httptest's default remote address
// is not loopback, and a keyless API lets only loopback in).
func loopbackGet(target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = "127.0.0.1:40000"
	return r
}

// conforms fails the test when the answer rec to req is not what aggregate/openapi.yaml says
// of that operation (status, content type, body schema).
func conforms(t *testing.T, req *http.Request, rec *httptest.ResponseRecorder) {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(aggregate.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	probe := httptest.NewRequest(req.Method, "http://127.0.0.1:8081"+req.URL.RequestURI(), nil)
	route, params, err := router.FindRoute(probe)
	if err != nil {
		t.Fatalf("%s %s is served but not described: %v", req.Method, req.URL, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: probe, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
		Body: io.NopCloser(bytes.NewReader(rec.Body.Bytes())), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s: the answer %d is not what aggregate/openapi.yaml says: %v\n%s", req.Method, req.URL, rec.Code, err, rec.Body)
	}
}
