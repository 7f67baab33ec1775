// Package problem writes RFC 9457 problem details, the body of every refusal of Tally's
// console-facing APIs (the accounts API on ingest, the query API on aggregate).
package problem

import (
	"encoding/json"
	"net/http"
)

// ContentType is the media type of a problem details body.
const ContentType = "application/problem+json"

// Details is an RFC 9457 problem details object; Detail says what to do.
type Details struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// Write answers status with detail as problem details.
func Write(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Details{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
}

// Routed serves mux, except that the 404 and 405 answers of mux itself (no route, or a route
// without the method) become problem details, the Allow header kept.
func Routed(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r) // routed: the route's own answers, path values set
			return
		}
		probe := &headerOnly{header: http.Header{}} // mux's own answer: a 404, a 405 or a redirect
		h.ServeHTTP(probe, r)
		switch probe.status {
		case http.StatusNotFound:
			Write(w, http.StatusNotFound, "no such path: "+r.Method+" "+r.URL.Path+" (GET /openapi.yaml describes the API)")
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", probe.header.Get("Allow"))
			Write(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; allowed: "+probe.header.Get("Allow"))
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

// headerOnly is a ResponseWriter that keeps the status and headers and drops the body.
type headerOnly struct {
	header http.Header
	status int
}

func (h *headerOnly) Header() http.Header         { return h.header }
func (h *headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerOnly) WriteHeader(status int)      { h.status = status }
