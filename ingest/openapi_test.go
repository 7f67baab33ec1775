package ingest_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// The API descriptions are valid OpenAPI, and every path ingest/openapi.yaml describes is
// served (a POST without a body is refused for the body, not routed nowhere).
func TestOpenAPIDescribesTheServedAPI(t *testing.T) {
	docs := map[string]*openapi3.T{}
	for _, f := range []string{"openapi.yaml", "../aggregate/openapi.yaml"} {
		doc, err := openapi3.NewLoader().LoadFromFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := doc.Validate(context.Background()); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		docs[f] = doc
	}
	api := newAccountsAPI(t, &memPublisher{})
	paths := docs["openapi.yaml"].Paths.Map()
	for _, kind := range []string{"activations", "packs", "price-overrides"} {
		if paths["/v1/accounts/{account}/"+kind] == nil {
			t.Errorf("POST /v1/accounts/{account}/%s is served but not described", kind)
		}
	}
	for path, item := range paths {
		if item.Post == nil {
			t.Errorf("%s: no POST described", path)
			continue
		}
		if code, detail := change(api, "acme", strings.TrimPrefix(path, "/v1/accounts/{account}/"), ""); code != http.StatusBadRequest {
			t.Errorf("POST %s with no body: %d %s; want 400", path, code, detail)
		}
	}
}
