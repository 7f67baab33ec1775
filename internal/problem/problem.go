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
