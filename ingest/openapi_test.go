package ingest_test

import (
	"bytes"
	"context"
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

	"github.com/tally-billing/tally/aggregate"
	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/settle"
)

// loadDoc parses and validates an API description.
func loadDoc(t *testing.T, raw []byte) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return doc
}

// The descriptions are valid OpenAPI 3.1, and the ingest role's answers are what its
// description says: a request of each kind (usage single, batch, partly refused, refused,
// unauthorised, wrong media type; account changes accepted and refused; the description
// itself) is sent to the role's real routes, and request and response are validated against
// the description, operation by operation. Paths the server answers 404 to are errors too.
func TestOpenAPIDescribesTheServedAPI(t *testing.T) {
	loadDoc(t, aggregate.OpenAPI)
	doc := loadDoc(t, ingest.OpenAPI)
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	events, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: 64 << 10, MaxBatch: 50, Keys: keyring(t), PublishTimeout: 5 * time.Second},
		settle.DefaultCatalogue(), &memPublisher{}, slog.New(slog.NewTextHandler(io.Discard, nil)), ingest.NewMetrics(prometheus.NewRegistry()), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	accounts, err := ingest.NewAccountsAPI(ingest.AccountsConfig{PublishTimeout: time.Second}, settle.DefaultCatalogue(), &memPublisher{},
		slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	routes := ingest.Routes(events, accounts)
	one := usageJSON("e1", "acme", "image-tagging", 5)
	pack := `{"id":"sale-1","pack_id":"p-1","service":"image-tagging","calls":500000,"valid_from":"2026-10-01T00:00:00+08:00","valid_until":"2027-10-01T00:00:00+08:00"}`
	seen := map[string]bool{}
	for _, c := range []struct {
		method, path, contentType, body, remote string
		want                                    int
	}{
		{"POST", "/v1/events", "application/cloudevents+json", one, "", http.StatusOK},
		{"POST", "/v1/events", "application/cloudevents-batch+json", "[" + one + "," + usageJSON("e2", "acme", "smart-cropping", 1) + "]", "", http.StatusOK},
		{"POST", "/v1/events", "application/cloudevents-batch+json", "[" + one + "," + usageJSON("e3", "acme", "no-such-service", 1) + "]", "", http.StatusMultiStatus},
		{"POST", "/v1/events", "application/cloudevents+json", usageJSON("e4", "acme", "no-such-service", 1), "", http.StatusBadRequest},
		{"POST", "/v1/events", "application/cloudevents+json", one, "192.0.2.9:4000", http.StatusUnauthorized},
		{"POST", "/v1/events", "text/plain", one, "", http.StatusUnsupportedMediaType},
		{"POST", "/v1/accounts/acme/packs", "application/json", pack, "", http.StatusCreated},
		{"POST", "/v1/accounts/acme/packs", "application/json", strings.Replace(pack, "2027-10-01", "2026-09-01", 1), "", http.StatusBadRequest},
		{"POST", "/v1/accounts/acme/activations", "application/json", `{"id":"a1","service":"image-tagging"}`, "", http.StatusCreated},
		{"POST", "/v1/accounts/acme/price-overrides", "application/json", `{"id":"po1","service":"image-tagging","effective_from":"2026-11-01T00:00:00+08:00","tiers":[{"from_calls":0,"unit_price":"1.8"}]}`, "", http.StatusCreated},
		{"GET", "/openapi.yaml", "", "", "", http.StatusOK},
	} {
		req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		req.RemoteAddr = "127.0.0.1:5555"
		if c.remote != "" {
			req.RemoteAddr = c.remote
		}
		if c.contentType != "" {
			req.Header.Set("Content-Type", c.contentType)
		}
		rec := httptest.NewRecorder()
		routes.ServeHTTP(rec, req)
		name := c.method + " " + c.path + " (" + c.contentType + ")"
		if rec.Code != c.want {
			t.Errorf("%s: %d, want %d: %s", name, rec.Code, c.want, rec.Body)
			continue
		}
		route, params, err := router.FindRoute(httptest.NewRequest(c.method, "http://127.0.0.1:8080"+c.path, nil))
		if err != nil {
			t.Errorf("%s is served but not described: %v", name, err)
			continue
		}
		seen[c.method+" "+route.Path] = true
		in := &openapi3filter.RequestValidationInput{Request: httptest.NewRequest(c.method, "http://127.0.0.1:8080"+c.path, strings.NewReader(c.body)), PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		if c.contentType != "" {
			in.Request.Header.Set("Content-Type", c.contentType)
		}
		if c.want < 300 && c.contentType != "text/plain" {
			if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
				t.Errorf("%s: the request is not what the description says: %v", name, err)
			}
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
			Body: io.NopCloser(bytes.NewReader(rec.Body.Bytes())), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			t.Errorf("%s: the answer %d is not what the description says: %v\n%s", name, rec.Code, err, rec.Body)
		}
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if !seen[method+" "+path] {
				t.Errorf("%s %s is described but this test sends it nothing", method, path)
			}
		}
	}
	// What the routes do not serve is refused as problem details, 405 with Allow.
	for _, c := range []struct {
		method, path string
		want         int
	}{{"GET", "/v1/nothing", http.StatusNotFound}, {"GET", "/v1/accounts/acme/packs", http.StatusMethodNotAllowed}} {
		rec := httptest.NewRecorder()
		routes.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.want || rec.Header().Get("Content-Type") != "application/problem+json" || (c.want == http.StatusMethodNotAllowed && rec.Header().Get("Allow") == "") {
			t.Errorf("%s %s: %d %v %s", c.method, c.path, rec.Code, rec.Header(), rec.Body)
		}
	}
}
