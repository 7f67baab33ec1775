package ingest

import (
	_ "embed"
	"net/http"

	"github.com/tally-billing/tally/internal/problem"
)

// OpenAPI is the description of the ingest role's API (openapi.yaml), served at /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Routes is the ingest role's API on one handler: POST /v1/events, the accounts API, GET
// /openapi.yaml, and problem details for a path or method it does not serve.
func Routes(events http.Handler, accounts *AccountsAPI) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/events", events)
	accounts.Register(mux)
	mux.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(OpenAPI)
	})
	return problem.Routed(mux)
}
